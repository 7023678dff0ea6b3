package broker

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// TestDisconnectBeforeWriteFailure: a subscriber that stops reading, sends
// DISCONNECT and closes its socket with deliveries still unread (so its
// kernel answers with a reset) left cleanly; its will must not be
// published. The broker's next write to it fails, and that failure must
// not end the connection before the DISCONNECT already received is read.
// (Seen with mosquitto_sub -C, which disconnects as soon as it has its
// count while messages keep coming.)
func TestDisconnectBeforeWriteFailure(t *testing.T) {
	t.Parallel()
	s, addr := startServer(t, Options{})
	watcher, pub := watchWills(t, addr)
	var stop atomic.Bool
	flooding := make(chan struct{})
	go func() {
		defer close(flooding)
		b, _ := (&packet.Publish{Topic: "flood/x", Payload: make([]byte, 512)}).Encode(nil, packet.V5)
		for !stop.Load() {
			if _, err := pub.NC.Write(b); err != nil {
				return
			}
			time.Sleep(100 * time.Microsecond)
		}
	}()
	defer func() { stop.Store(true); <-flooding }()

	const rounds = 30
	for i := range rounds {
		c := dial(t, addr, packet.V5)
		c.Connect(&packet.Connect{ClientID: "leaver", CleanStart: true, WillFlag: true, WillTopic: "will/leaver", WillPayload: []byte("gone")})
		// The server may send matching PUBLISH packets before the SUBACK
		// (section 3.8.4 of 3.1.1 and 5.0): read until it comes.
		c.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "flood/#"}}})
		for {
			if _, ok := c.Next(5 * time.Second).(*packet.Suback); ok {
				break
			}
		}
		// Let deliveries pile up unread, then leave cleanly at once; every
		// other round long enough for the idle reader to park.
		time.Sleep(time.Duration(i%2) * 2 * parkIdle)
		b, _ := (&packet.Disconnect{}).Encode(nil, packet.V5)
		if _, err := c.NC.Write(b); err != nil {
			t.Fatal(err)
		}
		c.NC.Close()
		// The broker has finished with it (will decided) once the client
		// is gone from its list.
		mqtttest.Eventually(t, 5*time.Second, func() bool { _, _, ok := s.Client("leaver"); return !ok })
	}
	// A will is routed before its connection leaves the list; the
	// watcher's PINGRESP comes after everything routed to it before.
	watcher.Send(&packet.Pingreq{})
	for {
		p := watcher.Next(10 * time.Second)
		if pp, ok := p.(*packet.Publish); ok {
			t.Fatalf("will published for a client that sent DISCONNECT: %s", pp.Topic)
		}
		if _, ok := p.(*packet.Pingresp); ok {
			break
		}
	}
}

// TestWriteFailureWithoutDisconnect: the same client closing without
// DISCONNECT (its kernel resets the connection, deliveries unread) is a
// lost connection: its will is published at once, parked or not.
func TestWriteFailureWithoutDisconnect(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, Options{})
	watcher, pub := watchWills(t, addr)
	for i := range 4 {
		c := dial(t, addr, packet.V5)
		c.Connect(&packet.Connect{ClientID: "leaver", CleanStart: true, WillFlag: true, WillTopic: "will/leaver", WillPayload: []byte("gone")})
		c.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "flood/#"}}})
		if _, ok := c.Next(5 * time.Second).(*packet.Suback); !ok {
			t.Fatal("no SUBACK")
		}
		pub.Send(&packet.Publish{Topic: "flood/x", Payload: make([]byte, 512)})
		time.Sleep(time.Duration(i%2) * 2 * parkIdle) // parked every other round
		c.NC.Close()                                  // the delivery unread: a reset
		for j := 0; j < 3; j++ {
			pub.Send(&packet.Publish{Topic: "flood/x", Payload: make([]byte, 512)})
		}
		p, ok := watcher.Next(5 * time.Second).(*packet.Publish)
		if !ok || p.Topic != "will/leaver" {
			t.Fatalf("round %d: got %v, want the will", i, p)
		}
	}
}

// watchWills connects a client subscribed to will/# (where the tests'
// leavers put their wills) and a publisher, both MQTT 5 over TCP.
func watchWills(t *testing.T, addr string) (watcher, pub *mqtttest.Client) {
	t.Helper()
	watcher = dial(t, addr, packet.V5)
	watcher.Connect(&packet.Connect{ClientID: "watcher", CleanStart: true})
	watcher.Subscribe("will/#", 0)
	pub = dial(t, addr, packet.V5)
	pub.Connect(&packet.Connect{ClientID: "pub", CleanStart: true})
	return watcher, pub
}
