package jepsen

import (
	"strings"
	"testing"
)

// The checker is tested on small histories written by hand, each with
// one violation (or a case that must not count as one): a checker that
// cannot fail would pass every broker.

// hist builds a history: one persistent subscriber (ps, QoS 2, subscribed
// at 10), one clean subscriber (cs), two members of group g.
func hist() *History {
	h := &History{}
	h.Subs = []Subscriber{
		{ID: "ps", Kind: Persistent, Filter: "t/#", QoS: 2, SubAck: 10},
		{ID: "cs", Kind: Clean, Filter: "t/#", QoS: 2, SubAck: 10},
		{ID: "m0", Kind: Shared, Group: "g", Filter: "$share/g/t/#", QoS: 2, SubAck: 10},
		{ID: "m1", Kind: Shared, Group: "g", Filter: "$share/g/t/#", QoS: 2, SubAck: 10},
	}
	return h
}

func (h *History) pub(client string, conn, seq int, topic string, qos uint8, st Status, invoke int64) int {
	h.Pubs = append(h.Pubs, PubOp{Client: client, Conn: conn, Seq: seq, Topic: topic, QoS: qos,
		Status: st, Invoke: invoke, Return: invoke + 5})
	return len(h.Pubs) - 1
}

func (h *History) got(sub, epoch, op int, qos uint8, at int64) {
	h.Deliveries = append(h.Deliveries, Delivery{Sub: sub, Epoch: epoch, Op: op, QoS: qos, TopicOK: op >= 0, At: at})
}

// full delivers op to ps, cs and group member m0.
func (h *History) full(op int, qos uint8, at int64) {
	h.got(0, 1, op, qos, at)
	h.got(1, 1, op, qos, at)
	h.got(2, 1, op, qos, at)
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name  string
		build func(h *History)
		want  func(r *Result) int // the count that must be above 0 and the only one (0 with ok)
		ok    bool
	}{
		{"all delivered", func(h *History) {
			h.full(h.pub("p", 1, 0, "t/0", 1, OK, 20), 1, 30)
			h.full(h.pub("p", 1, 1, "t/0", 2, OK, 21), 2, 31)
		}, func(r *Result) int { return r.Violations() }, true},
		{"acked, never delivered to the persistent subscriber", func(h *History) {
			op := h.pub("p", 1, 0, "t/0", 1, OK, 20)
			h.got(1, 1, op, 1, 30)
			h.got(2, 1, op, 1, 30)
		}, func(r *Result) int { return r.Lost }, false},
		{"invoked before the SUBACK: not owed", func(h *History) {
			h.pub("p", 1, 0, "t/0", 1, OK, 5)
		}, func(r *Result) int { return r.Violations() }, true},
		{"unknown or refused, never delivered: not owed", func(h *History) {
			h.pub("p", 1, 0, "t/0", 2, Unknown, 20)
			h.pub("p", 1, 1, "t/0", 2, Fail, 21)
		}, func(r *Result) int { return r.Violations() }, true},
		{"acked, never delivered to the group", func(h *History) {
			op := h.pub("p", 1, 0, "t/0", 2, OK, 20)
			h.got(0, 1, op, 2, 30)
			h.got(1, 1, op, 2, 30)
		}, func(r *Result) int { return r.Lost }, false},
		{"QoS 2 twice to one session", func(h *History) {
			op := h.pub("p", 1, 0, "t/0", 2, OK, 20)
			h.full(op, 2, 30)
			h.got(0, 1, op, 2, 40)
		}, func(r *Result) int { return r.Duplicated }, false},
		{"QoS 2 once to each of two clean sessions", func(h *History) {
			op := h.pub("p", 1, 0, "t/0", 2, OK, 20)
			h.full(op, 2, 30)
			h.got(1, 2, op, 2, 40)
		}, func(r *Result) int { return r.Violations() }, true},
		{"QoS 1 twice: a redelivery", func(h *History) {
			op := h.pub("p", 1, 0, "t/0", 1, OK, 20)
			h.full(op, 1, 30)
			h.got(0, 1, op, 1, 40)
		}, func(r *Result) int { return r.Violations() }, true},
		{"QoS 2 to two members of a group", func(h *History) {
			op := h.pub("p", 1, 0, "t/0", 2, OK, 20)
			h.full(op, 2, 30)
			h.got(3, 1, op, 2, 30)
		}, func(r *Result) int { return r.GroupDup }, false},
		{"a payload nobody published", func(h *History) {
			h.got(0, 1, -1, 1, 30)
		}, func(r *Result) int { return r.Unexpected }, false},
		{"a refused publish delivered", func(h *History) {
			h.got(0, 1, h.pub("p", 1, 0, "t/0", 1, Fail, 20), 1, 30)
		}, func(r *Result) int { return r.Unexpected }, false},
		{"delivered before it was published", func(h *History) {
			h.full(h.pub("p", 1, 0, "t/0", 1, OK, 20), 1, 15)
		}, func(r *Result) int { return r.Unexpected }, false},
		{"out of order in one publisher session", func(h *History) {
			a := h.pub("p", 1, 0, "t/0", 1, OK, 20)
			b := h.pub("p", 1, 1, "t/0", 1, OK, 21)
			h.full(b, 1, 30)
			h.full(a, 1, 31)
		}, func(r *Result) int { return r.Reordered }, false},
		{"out of order across publisher sessions: allowed", func(h *History) {
			a := h.pub("p", 1, 0, "t/0", 1, OK, 20)
			b := h.pub("p", 2, 1, "t/0", 1, OK, 21)
			h.full(b, 1, 30)
			h.full(a, 1, 31)
		}, func(r *Result) int { return r.Violations() }, true},
		{"QoS 1 redelivered after a later message: not a reordering", func(h *History) {
			a := h.pub("p", 1, 0, "t/0", 1, OK, 20)
			b := h.pub("p", 1, 1, "t/0", 1, OK, 21)
			h.full(a, 1, 30)
			h.full(b, 1, 31)
			h.got(0, 1, a, 1, 32)
		}, func(r *Result) int { return r.Violations() }, true},
		{"QoS 1 sent again, to another group member after a later message: a redelivery", func(h *History) {
			a := h.pub("p", 1, 0, "t/0", 1, OK, 20)
			b := h.pub("p", 1, 1, "t/0", 1, OK, 21)
			h.full(a, 1, 30)
			h.full(b, 1, 31)
			h.got(3, 1, a, 1, 32)
		}, func(r *Result) int { return r.Violations() }, true},
		{"out of order at one group member: reported, not a violation [MQTT-4.6.0-6]", func(h *History) {
			a := h.pub("p", 1, 0, "t/0", 1, OK, 20)
			b := h.pub("p", 1, 1, "t/0", 1, OK, 21)
			h.got(0, 1, a, 1, 30)
			h.got(0, 1, b, 1, 31)
			h.got(1, 1, a, 1, 30)
			h.got(1, 1, b, 1, 31)
			h.got(3, 1, b, 1, 32)
			h.got(3, 1, a, 1, 33)
		}, func(r *Result) int { return r.Violations() }, true},
		{"QoS 1 sent again by its publisher, first to a clean session after a later one: not a reordering", func(h *History) {
			a := h.pub("p", 1, 0, "t/0", 1, OK, 20)
			b := h.pub("p", 1, 1, "t/0", 1, OK, 21)
			h.Pubs[a].Resent = true
			h.full(a, 1, 30)
			h.got(0, 1, b, 1, 31)
			h.got(2, 1, b, 1, 31)
			h.got(1, 2, b, 1, 31)
			h.got(1, 2, a, 1, 32)
		}, func(r *Result) int { return r.Violations() }, true},
		{"a persistent session lost", func(h *History) {
			h.Subs[0].Lost = 1
		}, func(r *Result) int { return r.SessionsLost }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := hist()
			tc.build(h)
			r := Check(h)
			n := tc.want(r)
			switch {
			case tc.ok && n != 0:
				t.Errorf("%d violations, want none:\n%s", n, r)
			case !tc.ok && n == 0:
				t.Errorf("the violation was not found:\n%s", r)
			case !tc.ok && r.Violations() != n:
				t.Errorf("%d violations in all, want only the %d of this kind:\n%s", r.Violations(), n, r)
			}
		})
	}
}

func TestCheckRetained(t *testing.T) {
	write := func(h *History, client string, invoke, ret int64, st Status) int {
		h.Pubs = append(h.Pubs, PubOp{Client: client, Topic: "r/0", QoS: 1, Retain: true, Status: st, Invoke: invoke, Return: ret})
		return len(h.Pubs) - 1
	}
	read := func(h *History, invoke, ret int64, op int) {
		h.Reads = append(h.Reads, Read{Client: "rd", Topic: "r/0", Invoke: invoke, Return: ret, Op: op})
	}
	for _, tc := range []struct {
		name  string
		build func(h *History)
		legal bool
	}{
		{"reads the last acknowledged write", func(h *History) {
			write(h, "w", 0, 10, OK)
			b := write(h, "w", 20, 30, OK)
			read(h, 40, 50, b)
		}, true},
		{"reads an overwritten value", func(h *History) {
			a := write(h, "w", 0, 10, OK)
			write(h, "w", 20, 30, OK)
			read(h, 40, 50, a)
		}, false},
		{"reads either of two concurrent writes", func(h *History) {
			a := write(h, "w", 0, 30, OK)
			write(h, "v", 5, 25, OK)
			read(h, 40, 50, a)
		}, true},
		{"reads an unknown write", func(h *History) {
			write(h, "w", 0, 10, OK)
			c := write(h, "w", 20, 0, Unknown)
			read(h, 40, 50, c)
		}, true},
		{"reads a refused write", func(h *History) {
			write(h, "w", 0, 10, OK)
			c := write(h, "w", 20, 30, Fail)
			read(h, 40, 50, c)
		}, false},
		{"reads the new value, then the old one", func(h *History) {
			a := write(h, "w", 0, 10, OK)
			b := write(h, "w", 20, 60, OK)
			read(h, 30, 40, b)
			read(h, 45, 50, a)
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &History{}
			tc.build(h)
			r := Check(h)
			if got := r.Linearizable == "ok"; got != tc.legal {
				t.Errorf("linearizable %q, want legal %v:\n%s", r.Linearizable, tc.legal, r)
			}
			if !tc.legal && !strings.Contains(r.String(), "r/0") {
				t.Errorf("the summary does not name r/0:\n%s", r)
			}
		})
	}
}

// TestCheckGroupReorderCounted: a shared member's reorder is not a
// violation but must still be counted and printed, so that a change that
// reorders groups far more than before shows in a run's summary; a
// non-shared subscriber's reorder in the same history still fails.
func TestCheckGroupReorderCounted(t *testing.T) {
	h := hist()
	a := h.pub("p", 1, 0, "t/0", 1, OK, 20)
	b := h.pub("p", 1, 1, "t/0", 1, OK, 21)
	h.got(2, 1, b, 1, 30)
	h.got(2, 1, a, 1, 31)
	h.got(0, 1, a, 1, 30)
	h.got(0, 1, b, 1, 31)
	r := Check(h)
	if r.GroupReordered != 1 || r.Violations() != 0 {
		t.Fatalf("GroupReordered %d, violations %d; want 1 and 0:\n%s", r.GroupReordered, r.Violations(), r)
	}
	if !strings.Contains(r.String(), "m0 got") {
		t.Errorf("the summary does not name the member's reorder:\n%s", r)
	}
	h.got(1, 1, b, 1, 30)
	h.got(1, 1, a, 1, 31)
	if r := Check(h); r.Reordered != 1 || r.GroupReordered != 1 {
		t.Errorf("with the clean subscriber reordered too: Reordered %d, GroupReordered %d; want 1 and 1:\n%s", r.Reordered, r.GroupReordered, r)
	}
}

// TestCheckReadsAfterFault: TestCheckerSeesLosses holds the retained
// registers to "illegal" only when a read came after a fault; the count
// takes the nemesis' first action, not an undo or a client's event.
func TestCheckReadsAfterFault(t *testing.T) {
	h := &History{
		Events: []Event{{At: 5, Who: "ps0", What: "connect to node 0: refused"}, {At: 10, Who: "nemesis", What: "kill node 0"}, {At: 20, Who: "nemesis", What: "undo kill node 0"}},
		Reads:  []Read{{Topic: "r/0", Invoke: 3, Return: 4, Op: -1}, {Topic: "r/0", Invoke: 8, Return: 12, Op: -1}, {Topic: "r/1", Invoke: 15, Return: 16, Op: -1}, {Topic: "r/1", Invoke: 25, Return: 26, Op: -1}},
	}
	if r := Check(h); r.FaultTime != 10 || r.LongestFault != 10 || r.Faults["kill"] != 1 {
		t.Errorf("FaultTime %v, LongestFault %v, faults %v; want 10ns, 10ns and one kill", r.FaultTime, r.LongestFault, r.Faults)
	}
	if r := Check(h); r.ReadsAfterFault != 2 {
		t.Fatalf("ReadsAfterFault = %d, want 2 (invoked at 15 and 25, after the kill at 10)", r.ReadsAfterFault)
	}
	if r := Check(&History{Reads: h.Reads}); r.ReadsAfterFault != 0 {
		t.Fatalf("no fault: ReadsAfterFault = %d, want 0", r.ReadsAfterFault)
	}
}
