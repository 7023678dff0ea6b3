package store_test

import (
	"log/slog"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
	"github.com/roost-mqtt/roost/store"
)

// forEachBackend runs a restart test on each store: test gets the store for
// the first broker and reopen, which returns the store for the next one
// (called after the previous broker has shut down and closed its store).
func forEachBackend(t *testing.T, test func(t *testing.T, st broker.Store, reopen func() broker.Store)) {
	t.Run("memory", func(t *testing.T) {
		m := store.NewMemory()
		test(t, m, func() broker.Store { return m })
	})
	t.Run("disk", func(t *testing.T) {
		dir := t.TempDir()
		open := func() broker.Store {
			d, err := store.Open(dir, store.DiskOptions{Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			return d
		}
		test(t, open(), open)
	})
}

// A PUBREL the subscriber has not completed is resent after a restart, not
// the PUBLISH: the message is delivered exactly once.
func TestRestartKeepsPubrel(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testRestartKeepsPubrel)
}

func testRestartKeepsPubrel(t *testing.T, st broker.Store, reopen func() broker.Store) {
	addr, stop := run(t, st)
	sub := mqtttest.Dial(t, addr, packet.V5)
	sub.Connect(persistent("s"))
	sub.Subscribe("x", 2)
	pub := mqtttest.Dial(t, addr, packet.V5)
	pub.Connect(&packet.Connect{ClientID: "p", CleanStart: true})
	pub.Send(&packet.Publish{Topic: "x", QoS: 2, PacketID: 1, Payload: []byte("once")})
	pub.Next(time.Second) // PUBREC
	m := sub.Next(time.Second).(*packet.Publish)
	sub.Send(&packet.Pubrec{PacketID: m.PacketID})
	if rel, ok := sub.Next(time.Second).(*packet.Pubrel); !ok || rel.PacketID != m.PacketID {
		t.Fatalf("want PUBREL %d, got %+v", m.PacketID, rel)
	}
	sub.NC.Close()
	stop()

	addr2, _ := run(t, reopen())
	sub2 := mqtttest.Dial(t, addr2, packet.V5)
	sub2.Connect(persistent("s"))
	if rel, ok := sub2.Next(time.Second).(*packet.Pubrel); !ok || rel.PacketID != m.PacketID {
		t.Fatalf("after restart: want PUBREL %d, got %+v", m.PacketID, rel)
	}
	sub2.Send(&packet.Pubcomp{PacketID: m.PacketID})
	if more := sub2.Collect(300 * time.Millisecond); len(more) != 0 {
		t.Fatalf("after PUBCOMP: %+v", more)
	}
}

// Subscription options and identifiers survive a restart: No Local still
// holds back the subscriber's own messages, and deliveries carry the id.
func TestRestartKeepsSubscriptionOptions(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testRestartKeepsSubscriptionOptions)
}

func testRestartKeepsSubscriptionOptions(t *testing.T, st broker.Store, reopen func() broker.Store) {
	addr, stop := run(t, st)
	c := mqtttest.Dial(t, addr, packet.V5)
	c.Connect(persistent("opts"))
	s := &packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "o/#",
		Options: packet.SubOptions{QoS: 1, NoLocal: true, RetainAsPublished: true}}}}
	s.Properties.SubscriptionIDs = []uint32{77}
	s.Properties.Set(packet.PropSubscriptionID)
	c.Send(s)
	c.Next(time.Second)
	c.Send(&packet.Disconnect{})
	c.ExpectClosed(time.Second)
	stop()

	addr2, _ := run(t, reopen())
	c2 := mqtttest.Dial(t, addr2, packet.V5)
	c2.Connect(persistent("opts"))
	c2.Send(&packet.Publish{Topic: "o/self", Payload: []byte("mine")})
	other := mqtttest.Dial(t, addr2, packet.V5)
	other.Connect(&packet.Connect{ClientID: "other", CleanStart: true})
	other.Send(&packet.Publish{Topic: "o/x", Payload: []byte("theirs"), Retain: true})
	m, ok := c2.Next(time.Second).(*packet.Publish)
	if !ok || string(m.Payload) != "theirs" {
		t.Fatalf("got %+v, want only the other client's message (No Local)", m)
	}
	if len(m.Properties.SubscriptionIDs) != 1 || m.Properties.SubscriptionIDs[0] != 77 {
		t.Errorf("subscription ids %v, want [77]", m.Properties.SubscriptionIDs)
	}
	if !m.Retain {
		t.Error("Retain As Published lost: retain flag cleared")
	}
}

// A delayed will pending when the broker stops fires at its time after the
// restart; one that fell due while the broker was down fires at start-up.
// Serial: its wills fall due on the clock, and the test reads windows
// around their due times.
func TestRestartDelayedWill(t *testing.T) { forEachBackend(t, testRestartDelayedWill) }

func testRestartDelayedWill(t *testing.T, st broker.Store, reopen func() broker.Store) {
	addr, stop := run(t, st)
	watch := mqtttest.Dial(t, addr, packet.V5)
	watch.Connect(persistent("watch"))
	watch.Subscribe("will/#", 1)
	watch.Send(&packet.Disconnect{})
	watch.ExpectClosed(time.Second)
	start := time.Now()
	for _, w := range []struct {
		id    string
		delay uint32
	}{{"soon", 1}, {"later", 3}} {
		cp := persistent(w.id)
		cp.WillFlag, cp.WillQoS, cp.WillTopic, cp.WillPayload = true, 1, "will/"+w.id, []byte(w.id)
		cp.WillProperties.WillDelay = w.delay
		cp.WillProperties.Set(packet.PropWillDelay)
		c := mqtttest.Dial(t, addr, packet.V5)
		c.Connect(cp)
		c.NC.Close() // abnormal: the will is due after its delay
	}
	time.Sleep(200 * time.Millisecond) // the broker sees both connections end
	stop()
	time.Sleep(time.Until(start.Add(1100 * time.Millisecond))) // "soon" falls due while down

	addr2, _ := run(t, reopen())
	watch2 := mqtttest.Dial(t, addr2, packet.V5)
	watch2.Connect(persistent("watch"))
	m, ok := watch2.Next(time.Second).(*packet.Publish)
	if !ok || string(m.Payload) != "soon" {
		t.Fatalf("want the will that fell due while down, got %+v", m)
	}
	watch2.Send(&packet.Puback{PacketID: m.PacketID})
	if early := watch2.Collect(time.Until(start.Add(2700 * time.Millisecond))); len(early) != 0 {
		t.Fatalf("before the will delay passed: %+v", early)
	}
	m, ok = watch2.Next(2 * time.Second).(*packet.Publish)
	if !ok || string(m.Payload) != "later" {
		t.Fatalf("want the delayed will, got %+v", m)
	}
	if at := time.Since(start); at > 4500*time.Millisecond {
		t.Errorf("delayed will of 3 s arrived after %v", at)
	}
}
