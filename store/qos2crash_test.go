package store_test

import (
	"sync"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
	"github.com/roost-mqtt/roost/store"
)

// recorder is a Store that keeps every op in append order, so a test can
// restart a broker on any prefix of them that a crash could leave of the
// journal: one that ends between two Appends, and not inside a hold
// (broker.Grouper), whose ops become durable together, as in Disk.
type recorder struct {
	mu      sync.Mutex
	ops     []broker.Op
	appends []int // len(ops) after each Append
	holds   int   // open holds
	chain   int   // len(appends) when the open holds began
	// held are the closed chains of overlapping holds, as (appends
	// before, appends at the end): no crash leaves a cut strictly inside.
	held [][2]int
	// waited is the largest ticket Wait was called for: what an
	// acknowledgement written since may depend on.
	waited broker.Ticket
}

func (r *recorder) Load() (*broker.StoredState, error) { return &broker.StoredState{}, nil }
func (r *recorder) Close() error                       { return nil }

func (r *recorder) Wait(t broker.Ticket) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.waited = max(r.waited, t)
	return nil
}

// Append's ticket is the number of Appends so far: a cut that keeps k
// Appends makes every ticket up to k durable.
func (r *recorder) Append(ops ...broker.Op) broker.Ticket {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, ops...)
	r.appends = append(r.appends, len(r.ops))
	return broker.Ticket(len(r.appends))
}

func (r *recorder) Hold() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.holds == 0 {
		r.chain = len(r.appends)
	}
	r.holds++
}

func (r *recorder) Release() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.holds--; r.holds == 0 {
		r.held = append(r.held, [2]int{r.chain, len(r.appends)})
	}
}

var _ broker.Grouper = (*recorder)(nil)

// possible reports whether a crash can leave the first k Appends durable
// and lose the rest. r.mu must be held.
func (r *recorder) possible(k int) bool {
	for _, h := range r.held {
		if h[0] < k && k < h[1] {
			return false
		}
	}
	return r.holds == 0 || k <= r.chain
}

// cuts are the numbers of Appends a crash can leave, from from on.
func (r *recorder) cuts(from int) []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ks []int
	for k := from; k <= len(r.appends); k++ {
		if r.possible(k) {
			ks = append(ks, k)
		}
	}
	return ks
}

// journal is what a crash that kept the first k Appends leaves.
func (r *recorder) journal(k int) []broker.Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	if k == 0 {
		return nil
	}
	return append([]broker.Op(nil), r.ops[:r.appends[k-1]]...)
}

// count is the number of Appends so far; acked the largest ticket Wait
// was called for.
func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.appends)
}

func (r *recorder) acked() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return int(r.waited)
}

// prefix is the shortest journal a crash can leave that holds the first op
// for which keep is true.
func (r *recorder) prefix(t *testing.T, keep func(broker.Op) bool) []broker.Op {
	t.Helper()
	r.mu.Lock()
	k := -1
	for i, op := range r.ops {
		if keep(op) {
			for j, end := range r.appends {
				if end > i {
					k = j + 1
					break
				}
			}
			break
		}
	}
	for k >= 0 && k <= len(r.appends) && !r.possible(k) {
		k++
	}
	n := len(r.appends)
	r.mu.Unlock()
	switch {
	case k < 0:
		t.Fatal("no such op in the journal")
	case k > n:
		t.Fatal("the op is in a hold that was never released")
	}
	return r.journal(k)
}

// A QoS 2 PUBLISH is journalled in several appends: the packet id (so a
// repeat is not delivered again), then the deliveries to the subscribers'
// sessions, each session appending its own. A crash that kept the id and
// lost the deliveries would lose the message: after the restart the
// publisher, which got no PUBREC, sends the PUBLISH again with DUP, and the
// broker would take it for a repeat. Found by test/jepsen (seed 305):
// PUBREC for the resent PUBLISH, and no subscriber ever got the message.
// The broker holds the store (broker.Grouper) from the id to the last
// delivery, so no crash keeps one without the other: the cut after the
// id's Append is not one a crash can leave, and the shortest journal with
// the id has the deliveries too.
func TestCrashBetweenQoS2IDAndDeliveries(t *testing.T) {
	t.Parallel()
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

	// The crash: the shortest journal with the packet id.
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
	p, err := sub2.Read(2 * time.Second)
	if err != nil {
		t.Fatalf("the subscriber never got the message its publisher was acknowledged (PUBREC for the resend): %v", err)
	}
	m, ok := p.(*packet.Publish)
	if !ok || string(m.Payload) != "once" {
		t.Fatalf("the subscriber got %+v, want the PUBLISH its publisher was acknowledged", m)
	}
}
