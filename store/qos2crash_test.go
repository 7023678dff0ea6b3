package store_test

import (
	"flag"
	"sync"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
	"github.com/roost-mqtt/roost/store"
)

var knownBugs = flag.Bool("store.known-bugs", false, "run the tests of bugs found but not fixed yet")

// recorder is a Store that keeps every op in append order, so a test can
// restart a broker on any prefix of them: what a crash leaves of the
// journal when it comes between two commits.
type recorder struct {
	mu      sync.Mutex
	ops     []broker.Op
	appends []int // len(ops) after each Append
}

func (r *recorder) Load() (*broker.StoredState, error) { return &broker.StoredState{}, nil }
func (r *recorder) Wait(broker.Ticket) error           { return nil }
func (r *recorder) Close() error                       { return nil }
func (r *recorder) Append(ops ...broker.Op) broker.Ticket {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, ops...)
	r.appends = append(r.appends, len(r.ops))
	return broker.Ticket(len(r.appends))
}

// prefix is the ops up to and including the Append that held the first
// op for which keep is true.
func (r *recorder) prefix(t *testing.T, keep func(broker.Op) bool) []broker.Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, op := range r.ops {
		if keep(op) {
			for _, end := range r.appends {
				if end > i {
					return append([]broker.Op(nil), r.ops[:end]...)
				}
			}
		}
	}
	t.Fatal("no such op in the journal")
	return nil
}

// A QoS 2 PUBLISH is journalled as two appends: the packet id (so a
// repeat is not delivered again), then the deliveries to the subscribers'
// sessions. The disk store commits whatever was appended when it runs, so
// a kill -9 can keep the first and lose the second. After the restart the
// publisher, which got no PUBREC, sends the PUBLISH again with DUP; the
// broker must deliver it, since nothing of it was kept but its id. Found
// by test/jepsen (seed 305): PUBREC for the resent PUBLISH, and no
// subscriber ever got the message.
//
// Not fixed yet: the id and the deliveries must be one Append (the disk
// store commits each Append whole), and the router appends per session;
// appending the id last instead would turn the loss into a duplicate (the
// deliveries kept, the id lost, the resent PUBLISH routed again). See
// bench/jepsen/RESULTS.md. It fails today; -store.known-bugs runs it.
func TestCrashBetweenQoS2IDAndDeliveries(t *testing.T) {
	if !*knownBugs {
		t.Skip("known bug, not fixed yet (bench/jepsen/RESULTS.md): a crash between a QoS 2 id's append and its deliveries' loses the message; -store.known-bugs runs this")
	}
	rec := &recorder{}
	addr, stop := run(t, rec)
	sub := mqtttest.Dial(t, addr, packet.V5)
	sub.Connect(persistent("s"))
	sub.Subscribe("x", 2)
	sub.Send(&packet.Disconnect{})
	sub.ExpectClosed(time.Second)
	pub := mqtttest.Dial(t, addr, packet.V5)
	pub.Connect(persistent("p"))
	pub.Send(&packet.Publish{Topic: "x", QoS: 2, PacketID: 7, Payload: []byte("once")})
	if rc, ok := pub.Next(time.Second).(*packet.Pubrec); !ok || rc.ReasonCode >= 0x80 {
		t.Fatalf("want PUBREC, got %+v", rc)
	}
	stop()

	// The crash: the journal up to the packet id's append, without the
	// deliveries appended after it.
	mem := store.NewMemory()
	mem.Append(rec.prefix(t, func(op broker.Op) bool { return op.Kind == broker.OpInboundPut && op.ClientID == "p" })...)
	addr2, _ := run(t, mem)
	pub2 := mqtttest.Dial(t, addr2, packet.V5)
	if ack := pub2.Connect(persistent("p")); !ack.SessionPresent {
		t.Fatal("publisher session not present after the restart")
	}
	pub2.Send(&packet.Publish{Topic: "x", QoS: 2, Dup: true, PacketID: 7, Payload: []byte("once")})
	if rc, ok := pub2.Next(time.Second).(*packet.Pubrec); !ok || rc.ReasonCode >= 0x80 {
		t.Fatalf("want PUBREC for the resent PUBLISH, got %+v", rc)
	}
	sub2 := mqtttest.Dial(t, addr2, packet.V5)
	sub2.Connect(persistent("s"))
	m, ok := sub2.Next(time.Second).(*packet.Publish)
	if !ok || string(m.Payload) != "once" {
		t.Fatalf("the subscriber got %+v, want the PUBLISH its publisher was acknowledged", m)
	}
}
