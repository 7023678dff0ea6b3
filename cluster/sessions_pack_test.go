package cluster

import (
	"bytes"
	"fmt"
	"reflect"
	"testing"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/packet"
)

// TestPackOps: each client's ops in one pack, in their order; packs in the
// order of their first ops; a rollup starts a pack of its own, and so does
// an op that would take a pack beyond packMax. The first op of every pack
// has a ticket no later than any op after it (what Wait relies on).
func TestPackOps(t *testing.T) {
	big := make([]byte, packMax-10)
	in := []repOp{
		{ticket: 1, id: "a"}, {ticket: 2, id: "b"}, {ticket: 3, id: "a"}, {ticket: 4, id: "c", body: big},
		{ticket: 5, id: "b", rollup: true}, {ticket: 6, id: "b"}, {ticket: 7, id: "a"}, {ticket: 7, id: "c", body: big},
	}
	ops := append([]repOp(nil), in...)
	packOps(ops)
	type got struct {
		id     string
		ticket broker.Ticket
		pack   int
	}
	var have []got
	for _, op := range ops {
		have = append(have, got{op.id, op.ticket, op.pack})
	}
	want := []got{{"a", 1, 3}, {"a", 3, -1}, {"a", 7, -1}, {"b", 2, 1}, {"c", 4, 1}, {"b", 5, 2}, {"b", 6, -1}, {"c", 7, 1}}
	if !reflect.DeepEqual(have, want) {
		t.Fatalf("packed\n%v\nwant\n%v", have, want)
	}
	for i, op := range ops {
		if op.pack <= 0 {
			continue
		}
		for _, later := range ops[i:] {
			if later.ticket < op.ticket {
				t.Errorf("pack at %d (ticket %d) is followed by ticket %d", i, op.ticket, later.ticket)
			}
		}
	}
}

// TestTakePacks: a pack is taken to publish only while its client has
// none in flight, and everything after such a pack waits (the queue is in
// ticket order); ops behind it stay unpacked, to go with what their
// clients write meanwhile, while packs formed before go whole.
func TestTakePacks(t *testing.T) {
	ops := func(ids ...string) []repOp {
		out := make([]repOp, len(ids))
		for i, id := range ids {
			out[i] = repOp{ticket: broker.Ticket(i + 1), id: id}
		}
		return out
	}
	for _, tc := range []struct {
		name        string
		ops         []repOp
		from, lim   int
		busy        []string
		to          int
		packed      int // ops with a pack set, from from on
		nowInFlight map[string]int
	}{
		{"none in flight", ops("a", "b", "a"), 0, 3, nil, 3, 3, map[string]int{"a": 1, "b": 1}},
		{"the first client in flight", ops("a", "b", "a"), 0, 3, []string{"a"}, 0, 0, map[string]int{"a": 1}},
		{"stops at a busy client", ops("b", "a", "b"), 0, 3, []string{"a"}, 1, 1, map[string]int{"a": 1, "b": 1}},
		{"limit", ops("a", "b", "c"), 0, 2, nil, 2, 2, map[string]int{"a": 1, "b": 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			of := map[string]int{}
			for _, id := range tc.busy {
				of[id]++
			}
			to := takePacks(tc.ops, tc.from, tc.lim, of)
			if to != tc.to {
				t.Errorf("to = %d, want %d", to, tc.to)
			}
			packed := 0
			for _, op := range tc.ops[tc.from:] {
				if op.pack != 0 {
					packed++
				}
			}
			if packed != tc.packed {
				t.Errorf("%d ops packed, want %d: %+v", packed, tc.packed, tc.ops)
			}
			if !reflect.DeepEqual(of, tc.nowInFlight) {
				t.Errorf("in flight %v, want %v", of, tc.nowInFlight)
			}
		})
	}
	// A pack formed before goes whole, beyond the limit, and a client's
	// second pack waits for its first.
	q := ops("a", "a", "a", "b")
	q[0].pack, q[1].pack, q[2].pack, q[3].pack = 3, -1, -1, 1
	if to := takePacks(q, 0, 1, map[string]int{}); to != 3 {
		t.Errorf("a pack formed before: to = %d, want 3", to)
	}
	q = ops("a", "a")
	q[1].rollup = true
	if to := takePacks(q, 0, 2, map[string]int{}); to != 1 {
		t.Errorf("a client's two packs: to = %d, want 1 (the rollup after the first's acknowledgement)", to)
	}
	// An adoption (a rollup and the ops appended with it, one ticket) is
	// not cut by the limit: the rollup would go with part of the session.
	q = ops("b", "a", "a", "a", "c")
	q[1].rollup = true
	q[2].ticket, q[3].ticket = q[1].ticket, q[1].ticket
	if to := takePacks(q, 0, 2, map[string]int{}); to != 4 || q[1].pack != 3 || q[4].pack != 0 {
		t.Errorf("an adoption at the limit: to = %d, packs %+v; want 4, the adoption's 3 ops in one pack, c unpacked", to, q)
	}
}

// TestPackOpsRollupWhole: the ops appended with a rollup (its ticket) stay
// in the rollup's pack past packMax, up to rollupMax; a later op of the
// client starts a new pack once packMax is passed.
func TestPackOpsRollupWhole(t *testing.T) {
	body := make([]byte, packMax/4)
	var ops []repOp
	ops = append(ops, repOp{ticket: 1, id: "a", rollup: true})
	for range 8 { // twice packMax
		ops = append(ops, repOp{ticket: 1, id: "a", body: body})
	}
	ops = append(ops, repOp{ticket: 2, id: "a", body: body})
	packOps(ops)
	if ops[0].pack != 9 || ops[9].pack != 1 {
		t.Fatalf("packs %d and %d, want the adoption's 9 ops in one pack, the later op alone", ops[0].pack, ops[9].pack)
	}
	huge := make([]byte, rollupMax/3)
	ops = []repOp{{ticket: 1, id: "a", rollup: true}, {ticket: 1, id: "a", body: huge}, {ticket: 1, id: "a", body: huge},
		{ticket: 1, id: "a", body: huge}}
	packOps(ops)
	if ops[0].pack != 3 || ops[3].pack != 1 {
		t.Errorf("packs %d and %d, want 3 ops up to rollupMax, then one", ops[0].pack, ops[3].pack)
	}
}

// TestReplayPack: a pack replays as its ops one by one would, stale epochs
// skipped inside it too; a damaged pack is refused.
func TestReplayPack(t *testing.T) {
	ops := []broker.Op{
		{Kind: broker.OpSessionPut, Session: broker.StoredSession{Expiry: 60}},
		{Kind: broker.OpSubPut, Sub: broker.StoredSub{Filter: "a/#", Opts: packet.SubOptions{QoS: 1}}},
		{Kind: broker.OpQueuePut, Delivery: broker.StoredDelivery{Seq: 1, Msg: msg("a/x", "one", 1), QoS: 1}},
		{Kind: broker.OpQueuePut, Delivery: broker.StoredDelivery{Seq: 2, Msg: msg("a/x", "two", 1), QoS: 1}},
		{Kind: broker.OpSessionPut, Session: broker.StoredSession{Expiry: 60}}, // a newer owner
		{Kind: broker.OpQueueDel, Delivery: broker.StoredDelivery{Seq: 1}},     // the older one, skipped
		{Kind: broker.OpQueueDel, Delivery: broker.StoredDelivery{Seq: 2}},
	}
	epochs := []uint64{1, 1, 1, 1, 2, 1, 2}
	one := replayOf(t, "c", ops, epochs)
	reps := make([]repOp, len(ops))
	for i := range ops {
		body, err := encodeOpBody(&ops[i], "")
		if err != nil {
			t.Fatal(err)
		}
		reps[i] = repOp{id: "c", kind: ops[i].Kind, body: body}
	}
	// The first two alone, the rest in a pack: a subject holds both forms.
	r := newReplay("c")
	for i := range 2 {
		if err := r.apply(appendOp(nil, reps[i].kind, epochs[i], reps[i].body)); err != nil {
			t.Fatal(err)
		}
	}
	pack := appendPack(nil, reps[2:], epochs[2:])
	if err := r.apply(pack); err != nil {
		t.Fatal(err)
	}
	if a, b := sessionSummary(r.session()), sessionSummary(one.session()); a != b || r.skipped != one.skipped || r.skipped != 1 {
		t.Fatalf("from a pack %s (skipped %d), op by op %s (skipped %d)", a, r.skipped, b, one.skipped)
	}
	nested := appendPack(nil, []repOp{{kind: opPack}}, []uint64{1}) // a pack in a pack
	for name, b := range map[string][]byte{
		"truncated":   pack[:len(pack)-1],
		"trailing":    append(bytes.Clone(pack), 0),
		"short count": append([]byte{wireVersion, opPack, 9}, pack[3:]...),
		"nested":      nested,
		"empty op":    {wireVersion, opPack, 1, 0},
	} {
		if err := newReplay("c").apply(b); err == nil {
			t.Errorf("%s pack %x: no error", name, b)
		}
	}
}

// sessionSummary is what a replayed session holds, as text.
func sessionSummary(rec *broker.StoredSession) string {
	if rec == nil {
		return "none"
	}
	s := fmt.Sprintf("expiry %d subs %v queue", rec.Expiry, rec.Subs)
	for _, d := range rec.Queue {
		s += fmt.Sprintf(" %d:%s/%q/%d", d.Seq, d.Msg.Topic, d.Msg.Payload, d.PacketID)
	}
	return s + fmt.Sprintf(" inbound %v", rec.Inbound)
}
