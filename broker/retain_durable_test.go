package broker

import (
	"testing"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// A retained message reaches a new subscription only once its store op is
// durable. Found by test/jepsen (seed 304): a reader got a retained value
// whose PUBLISH was not yet acknowledged, the broker was killed before the
// sync, and after the restart readers got the older value again: a value
// read, then taken back. The publisher's PUBACK already waited for the
// sync; the reader's copy did not.
func TestRetainedServedOnceDurable(t *testing.T) {
	t.Parallel()
	g := newGatedStore()
	g.released = true
	_, addr := startServer(t, Options{Store: g})
	t.Cleanup(g.release) // before the server's shutdown, which drains

	pub := dial(t, addr, packet.V5)
	pub.Connect(&packet.Connect{ClientID: "pub", CleanStart: true})
	pub.Send(&packet.Publish{Topic: "r", QoS: 1, Retain: true, PacketID: 1, Payload: []byte("old")})
	if _, ok := pub.Next(time.Second).(*packet.Puback); !ok {
		t.Fatal("no PUBACK for the first retained value")
	}
	g.hold()
	pub.Send(&packet.Publish{Topic: "r", QoS: 1, Retain: true, PacketID: 2, Payload: []byte("new")})
	// The two clients' packets are not ordered with each other: subscribe
	// only once the broker has taken "new" (its op appended), or the
	// durable "old" is rightly what the reader gets.
	taken := func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return len(g.ops) > int(g.durable)
	}
	for deadline := time.Now().Add(5 * time.Second); !taken(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the broker did not take the second retained PUBLISH within 5 s")
		}
	}

	rd := dial(t, addr, packet.V5)
	rd.Connect(&packet.Connect{ClientID: "rd", CleanStart: true})
	rd.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "r", Options: packet.SubOptions{QoS: 1}}}})
	for _, p := range rd.Collect(300 * time.Millisecond) {
		if p, ok := p.(*packet.Publish); ok {
			t.Fatalf("retained %q served before it was durable", p.Payload)
		}
	}
	g.release()
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		p, ok := rd.Next(time.Until(deadline)).(*packet.Publish)
		if !ok {
			continue
		}
		if string(p.Payload) != "new" || !p.Retain {
			t.Fatalf("got %q (retain %v) once durable, want the retained \"new\"", p.Payload, p.Retain)
		}
		return
	}
	t.Fatal("no retained message once durable")
}
