package store_test

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// run starts a broker on st and returns its address and a stop function
// that shuts it down gracefully.
func run(t *testing.T, st broker.Store) (string, func()) {
	t.Helper()
	s, err := broker.New(broker.Options{Store: st, SysInterval: -1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	}
	t.Cleanup(stop)
	return ln.Addr().String(), stop
}

func persistent(id string) *packet.Connect {
	c := &packet.Connect{ClientID: id, KeepAlive: 60}
	c.Properties.SessionExpiry = 3600
	c.Properties.Set(packet.PropSessionExpiry)
	return c
}

// A new Server on the same store resumes persistent sessions with their
// subscriptions, inflight and queued messages, inbound QoS 2 state, and
// retained messages.
func TestRestartResumesState(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testRestartResumesState)
}

func testRestartResumesState(t *testing.T, st broker.Store, reopen func() broker.Store) {
	addr, stop := run(t, st)

	sub := mqtttest.Dial(t, addr, packet.V5)
	sub.Connect(persistent("car"))
	sub.Subscribe("cmd/#", 2)
	pub := mqtttest.Dial(t, addr, packet.V5)
	pub.Connect(&packet.Connect{ClientID: "ctl", CleanStart: true})
	// One message the subscriber receives but does not acknowledge.
	pub.Send(&packet.Publish{Topic: "cmd/a", QoS: 1, PacketID: 1, Payload: []byte("one")})
	pub.Next(time.Second)
	first := sub.Next(time.Second).(*packet.Publish)
	sub.NC.Close()
	// Two more while it is offline, and a retained one.
	pub.Send(&packet.Publish{Topic: "cmd/b", QoS: 2, PacketID: 2, Payload: []byte("two")})
	pub.Next(time.Second)
	pub.Send(&packet.Pubrel{PacketID: 2})
	pub.Next(time.Second)
	pub.Send(&packet.Publish{Topic: "cmd/c", QoS: 1, PacketID: 3, Payload: []byte("three"), Retain: true})
	pub.Next(time.Second)
	// The publisher's own persistent session holds an inbound QoS 2 id.
	ip := mqtttest.Dial(t, addr, packet.V5)
	ip.Connect(persistent("sender"))
	ip.Send(&packet.Publish{Topic: "elsewhere", QoS: 2, PacketID: 42, Payload: []byte("x")})
	ip.Next(time.Second)
	stop()

	addr2, _ := run(t, reopen())
	sub2 := mqtttest.Dial(t, addr2, packet.V5)
	if ack := sub2.Connect(persistent("car")); !ack.SessionPresent {
		t.Fatal("session not present after restart")
	}
	want := []struct {
		payload string
		dup     bool
	}{{"one", true}, {"two", false}, {"three", false}}
	for _, w := range want {
		m, ok := sub2.Next(time.Second).(*packet.Publish)
		// "two" and "three" may carry DUP too: the broker may not yet
		// have seen the first connection close when they were published.
		if !ok || string(m.Payload) != w.payload || w.dup && !m.Dup {
			t.Fatalf("got %+v, want %q dup=%v", m, w.payload, w.dup)
		}
		if w.dup && m.PacketID != first.PacketID {
			t.Errorf("resent with packet id %d, first sent as %d", m.PacketID, first.PacketID)
		}
	}
	// The subscription survived: a new publish arrives.
	pub2 := mqtttest.Dial(t, addr2, packet.V311)
	pub2.Connect(&packet.Connect{ClientID: "ctl2", CleanStart: true})
	pub2.Send(&packet.Publish{Topic: "cmd/d", Payload: []byte("four")})
	if m, ok := sub2.Next(time.Second).(*packet.Publish); !ok || string(m.Payload) != "four" {
		t.Fatalf("live message after restart: %+v", m)
	}
	// Retained survived.
	r := mqtttest.Dial(t, addr2, packet.V311)
	r.Connect(&packet.Connect{ClientID: "r", CleanStart: true})
	r.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "cmd/c"}}})
	r.Next(time.Second)
	if m, ok := r.Next(time.Second).(*packet.Publish); !ok || string(m.Payload) != "three" || !m.Retain {
		t.Fatalf("retained after restart: %+v", m)
	}
	// The inbound QoS 2 id is remembered: a resent PUBLISH gets PUBREC and
	// PUBREL completes it.
	ip2 := mqtttest.Dial(t, addr2, packet.V5)
	ip2.Connect(persistent("sender"))
	ip2.Send(&packet.Pubrel{PacketID: 42})
	if c, ok := ip2.Next(time.Second).(*packet.Pubcomp); !ok || c.ReasonCode != packet.Success {
		t.Fatalf("PUBCOMP after restart: %+v", c)
	}
}

// Session expiry counts the time the broker was down.
func TestRestartExpiresSessions(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testRestartExpiresSessions)
}

func testRestartExpiresSessions(t *testing.T, st broker.Store, reopen func() broker.Store) {
	addr, stop := run(t, st)
	c := mqtttest.Dial(t, addr, packet.V5)
	cp := &packet.Connect{ClientID: "brief", KeepAlive: 60}
	cp.Properties.SessionExpiry = 1
	cp.Properties.Set(packet.PropSessionExpiry)
	c.Connect(cp)
	c.Subscribe("a", 1)
	c.Send(&packet.Disconnect{})
	c.ExpectClosed(time.Second)
	stop()
	time.Sleep(1100 * time.Millisecond)
	addr2, _ := run(t, reopen())
	c2 := mqtttest.Dial(t, addr2, packet.V5)
	cp.CleanStart = false
	if ack := c2.Connect(cp); ack.SessionPresent {
		t.Error("session present after its expiry passed while the broker was down")
	}
}
