package jepsen

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/roost-mqtt/roost/topic"
)

// Result is what Check found. The counts under "violations" must be 0;
// the others describe the run.
type Result struct {
	Ops, Acked, Failed, Unknown int // publishes to t/# (QoS 1 and 2)
	AckedQoS1, AckedQoS2        int
	Deliveries                  int
	Recovered                   int // unknown publishes that were delivered
	Redelivered                 int // QoS 1 deliveries beyond the first (allowed)
	Reads, Writes               int // retained registers
	ReadsAfterFault             int // retained reads invoked after the nemesis' first fault
	DupFlagged                  int // deliveries with DUP set
	Connects, Resumed           int // subscriber connections, and those resuming a session
	Resent                      int // PUBLISH (DUP) and PUBREL sent again by persistent publishers
	Faults                      map[string]int
	// FaultTime is how long the run spent under a fault (each from its
	// cause to its undo, the final heal included; the nemesis causes one
	// at a time), and LongestFault the longest one: a long-fault run's
	// time under faults is a number in its summary, not a replay of the
	// seeded schedule.
	FaultTime, LongestFault time.Duration

	// Violations.
	Lost         int // acknowledged, owed to a persistent subscriber or group, never delivered
	Duplicated   int // QoS 2 deliveries beyond the first, per subscriber session
	GroupDup     int // QoS 2 messages delivered to more than one member of a shared group
	Unexpected   int // deliveries of nothing published, of a refused publish, to the wrong topic or before the publish
	Reordered    int // first deliveries out of their publisher's order, non-shared subscriptions
	SessionsLost int // CONNACKs without the session a persistent subscriber or publisher had

	// GroupReordered counts first deliveries out of their publisher's
	// order at shared-group members. It is reported, not a violation:
	// MQTT 5.0 requires the order on non-shared subscriptions only
	// [MQTT-4.6.0-6], and a group's message that waited for a member's
	// failover reaches whichever member serves it after newer ones
	// went to the others (section 4.8.2 lets the server send it to
	// another member once the first one's session is gone). Printed so
	// that a change that reorders groups far more than before still
	// shows in a run's summary.
	GroupReordered int
	// Linearizable is the retained registers' verdict: "ok", "illegal"
	// (a violation) or "unknown" (the search ran out of time; no verdict).
	Linearizable string
	NotLinear    []string // the topics whose history is illegal
	// StaleReads (with MaxStale, and per node) are retained reads that
	// returned a value overwritten before they began: the plainest
	// explanation of an illegal retained history.
	StaleReads  int
	MaxStale    time.Duration
	StaleByNode map[int]int

	Examples map[string][]string // up to 5 per check
}

// Violations is the number of violations found (an illegal retained
// history counts once per topic).
func (r *Result) Violations() int {
	return r.Lost + r.Duplicated + r.GroupDup + r.Unexpected + r.Reordered + r.SessionsLost + len(r.NotLinear)
}

func (r *Result) example(check, format string, args ...any) {
	if r.Examples == nil {
		r.Examples = map[string][]string{}
	}
	if len(r.Examples[check]) < 5 {
		r.Examples[check] = append(r.Examples[check], fmt.Sprintf(format, args...))
	}
}

// String is the run's summary: the counts, one line per check, and the
// first examples of each violation.
func (r *Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ops %d: acked %d (QoS 1 %d, QoS 2 %d), failed %d, unknown %d (delivered anyway %d); deliveries %d (DUP set %d), QoS 1 redeliveries %d; retained writes %d, reads %d\n",
		r.Ops, r.Acked, r.AckedQoS1, r.AckedQoS2, r.Failed, r.Unknown, r.Recovered, r.Deliveries, r.DupFlagged, r.Redelivered, r.Writes, r.Reads)
	fmt.Fprintf(&b, "faults %v, %v under a fault (longest %v); subscriber connections %d, %d of them resuming a session; publishes and PUBRELs resent by persistent publishers %d\n",
		r.Faults, r.FaultTime.Round(100*time.Millisecond), r.LongestFault.Round(100*time.Millisecond), r.Connects, r.Resumed, r.Resent)
	line := func(name string, n int) {
		verdict := "ok"
		if n > 0 {
			verdict = "FAIL"
		}
		fmt.Fprintf(&b, "  %-52s %6d  %s\n", name, n, verdict)
	}
	line("lost (acked, owed to persistent subscriber/group)", r.Lost)
	line("duplicated (QoS 2, per subscriber session)", r.Duplicated)
	line("shared group QoS 2 delivered to >1 member", r.GroupDup)
	line("unexpected (never published/refused/wrong topic)", r.Unexpected)
	line("reordered (per publisher session, topic, QoS)", r.Reordered)
	fmt.Fprintf(&b, "  %-52s %6d  %s\n", "reordered at shared-group members (not required)", r.GroupReordered, "reported")
	line("persistent sessions lost", r.SessionsLost)
	verdict := "ok"
	switch r.Linearizable {
	case "illegal":
		verdict = fmt.Sprintf("FAIL %s (stale reads %d, by node %v, up to %v)", strings.Join(r.NotLinear, ","),
			r.StaleReads, r.StaleByNode, r.MaxStale.Round(time.Millisecond))
	case "unknown":
		verdict = "no verdict (search timed out)"
	}
	fmt.Fprintf(&b, "  %-52s %6s  %s\n", "retained registers linearizable", "", verdict)
	keys := make([]string, 0, len(r.Examples))
	for k := range r.Examples {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, e := range r.Examples[k] {
			fmt.Fprintf(&b, "  %s: %s\n", k, e)
		}
	}
	return b.String()
}

// owed reports whether op must reach a persistent subscription acknowledged
// at subAck: acknowledged, and invoked after the SUBACK arrived (a publish
// concurrent with the SUBSCRIBE may be ordered before it).
func owed(op *PubOp, subAck int64) bool {
	return op.Status == OK && !op.Retain && subAck > 0 && op.Invoke > subAck
}

// plainFilter is the filter without its $share/group/ prefix.
func plainFilter(f string) string {
	_, rest, _, _ := topic.ParseShare(f)
	return rest
}

// Check checks a run's history. It is the whole definition of what the
// run must show:
//
//   - lost: every publish acknowledged (PUBACK, or PUBREC for QoS 2, with a
//     code below 0x80) and invoked after a persistent subscriber's first
//     SUBACK reached that subscriber (in any of its connections), and
//     reached at least one member of each shared group;
//   - duplicated: no subscriber session got a QoS 2 message twice at QoS 2
//     (repeats of a packet id awaiting PUBREL are not deliveries), and no
//     QoS 2 message reached two members of one group;
//   - unexpected: every delivery names a publish that was not refused,
//     on the topic it was published to, matching the subscriber's filter,
//     after it was invoked;
//   - order: per subscriber session and per (publisher connection, topic,
//     QoS), the first deliveries of messages come in the order they were
//     published [MQTT-4.6.0-5]. A QoS 1 message delivered again (after a
//     reconnection, DUP) is a redelivery, not a first delivery, and is not
//     held to the order: the specification allows it [MQTT-4.3.2] and a
//     resumed session resends unacknowledged messages before the rest
//     [MQTT-4.4.0-1]. Nor is a QoS 1 message its publisher sent again
//     (it is a new message to the broker, whose copy may follow later
//     ones), nor a message that reached another member of the group
//     first. A session is one connection for clean subscribers and the
//     whole run for persistent ones (a new one if it was lost). Shared
//     subscriptions are not held to it: MQTT requires the order when
//     forwarding on non-shared subscriptions only [MQTT-4.6.0-6], so a
//     member's reorders are counted in GroupReordered, not as violations;
//   - retained: each topic is a register, written by retained QoS 1
//     publishes (an unknown write may take effect at any time after its
//     invocation) and read by SUBSCRIBE; the history must be linearizable.
func Check(h *History) *Result {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := &Result{Connects: h.Connects, Resumed: h.Resumed, Resent: h.Resent, Faults: map[string]int{}, StaleByNode: map[int]int{}}
	caused := map[string]int64{} // "kill node 1" -> when
	for _, e := range h.Events {
		if e.Who != "nemesis" {
			continue
		}
		if what, ok := strings.CutPrefix(e.What, "undo "); ok {
			if at, ok := caused[what]; ok {
				d := time.Duration(e.At - at)
				r.FaultTime += d
				r.LongestFault = max(r.LongestFault, d)
				delete(caused, what)
			}
			continue
		}
		if f, _, ok := strings.Cut(e.What, " node"); ok {
			r.Faults[f]++
			caused[e.What] = e.At
		}
	}
	checkOps(h, r)
	r.SessionsLost += h.PubSessionsLost
	if h.PubSessionsLost > 0 {
		r.example("sessions-lost", "persistent publishers: %d times", h.PubSessionsLost)
	}
	bySub := make([][]*Delivery, len(h.Subs))
	delivered := make([]bool, len(h.Pubs))
	for i := range h.Deliveries {
		d := &h.Deliveries[i]
		r.Deliveries++
		if d.Dup {
			r.DupFlagged++
		}
		bySub[d.Sub] = append(bySub[d.Sub], d)
		if d.Op >= 0 {
			delivered[d.Op] = true
		}
	}
	for i := range h.Pubs {
		if h.Pubs[i].Status == Unknown && delivered[i] {
			r.Recovered++
		}
	}
	groups := map[string][]int{}
	for i := range h.Subs {
		if s := &h.Subs[i]; s.Kind == Shared {
			groups[s.Group] = append(groups[s.Group], i)
		}
	}
	groupFirst := map[string]map[int]int64{}
	for g, members := range groups {
		groupFirst[g] = firstDeliveries(members, bySub)
	}
	for i := range h.Subs {
		s := &h.Subs[i]
		got := checkSubscriber(h, r, s, bySub[i], groupFirst[s.Group])
		r.SessionsLost += s.Lost
		if s.Lost > 0 {
			r.example("sessions-lost", "%s: %d times", s.ID, s.Lost)
		}
		if s.Kind == Persistent {
			for op := range h.Pubs {
				if owed(&h.Pubs[op], s.SubAck) && got[op] == 0 {
					r.Lost++
					r.example("lost", "%s never got %s", s.ID, describe(h, op))
				}
			}
		}
	}
	for g, members := range groups {
		checkGroup(h, r, g, members, bySub)
	}
	checkRetained(h, r)
	return r
}

func checkOps(h *History, r *Result) {
	for i := range h.Pubs {
		op := &h.Pubs[i]
		if op.Retain {
			if op.Client != "init" {
				r.Writes++
			}
			continue
		}
		r.Ops++
		switch op.Status {
		case OK:
			r.Acked++
			if op.QoS == 1 {
				r.AckedQoS1++
			} else {
				r.AckedQoS2++
			}
		case Fail:
			r.Failed++
		default:
			r.Unknown++
		}
	}
	r.Reads = len(h.Reads)
	first := int64(-1)
	for _, e := range h.Events {
		if e.Who == "nemesis" && !strings.HasPrefix(e.What, "undo") {
			first = e.At
			break
		}
	}
	for _, rd := range h.Reads {
		if first >= 0 && rd.Invoke > first {
			r.ReadsAfterFault++
		}
	}
}

// firstDeliveries is when each operation first reached one of members.
func firstDeliveries(members []int, bySub [][]*Delivery) map[int]int64 {
	first := map[int]int64{}
	for _, m := range members {
		for _, d := range bySub[m] {
			if at, ok := first[d.Op]; !ok || d.At < at {
				first[d.Op] = d.At
			}
		}
	}
	return first
}

// checkSubscriber checks one subscriber's deliveries (in arrival order) for
// the unexpected, duplicates and order, and returns how many times each
// operation reached it. groupFirst (shared members only) is when each
// operation first reached the member's group: a QoS 1 message that
// reaches a second member later (its publisher sent it again, and the
// copy went to another member) is a redelivery for the group, not a
// first delivery to be held to the order.
func checkSubscriber(h *History, r *Result, s *Subscriber, ds []*Delivery, groupFirst map[int]int64) map[int]int {
	got := map[int]int{}
	type orderKey struct {
		epoch  int
		client string
		conn   int
		topic  string
		qos    uint8
	}
	last := map[orderKey]int{}
	type seenKey struct{ epoch, op int }
	seen := map[seenKey]int{}
	filter := plainFilter(s.Filter)
	for _, d := range ds {
		if d.Op < 0 {
			r.Unexpected++
			r.example("unexpected", "%s got a payload no publish had", s.ID)
			continue
		}
		op := &h.Pubs[d.Op]
		switch {
		case !d.TopicOK || !topic.Match(filter, op.Topic):
			r.Unexpected++
			r.example("unexpected", "%s got %s on another topic or outside %s", s.ID, describe(h, d.Op), s.Filter)
			continue
		case op.Status == Fail:
			r.Unexpected++
			r.example("unexpected", "%s got %s, refused with 0x%02x", s.ID, describe(h, d.Op), op.Reason)
		case d.At < op.Invoke:
			r.Unexpected++
			r.example("unexpected", "%s got %s before it was published", s.ID, describe(h, d.Op))
		}
		got[d.Op]++
		// A clean subscriber's epoch is its connection, a persistent
		// one's the session (a new one only after the broker lost it).
		epoch := d.Epoch
		sk := seenKey{epoch, d.Op}
		seen[sk]++
		if seen[sk] > 1 {
			if d.QoS == 2 {
				r.Duplicated++
				r.example("duplicated", "%s got %s %d times at QoS 2 (conn %d, node %d)", s.ID, describe(h, d.Op), seen[sk], d.Conn, d.Node)
			} else {
				r.Redelivered++
			}
			continue
		}
		if op.Resent && op.QoS == 1 {
			// Sent again by its publisher, a QoS 1 message is a new
			// one to the broker [MQTT-4.3.2]: its second copy comes
			// after later messages, first to sessions that missed the
			// first, and is not held to the order.
			continue
		}
		if at, ok := groupFirst[d.Op]; ok && at < d.At {
			if d.QoS != 2 {
				r.Redelivered++ // QoS 2 ones are checkGroup's
			}
			continue
		}
		ok := orderKey{epoch, op.Client, op.Conn, op.Topic, op.QoS}
		if prev, has := last[ok]; has && op.Seq < prev {
			if s.Kind == Shared {
				r.GroupReordered++
				r.example("reordered-in-group (reported, not a violation)", "%s got %s after %s#%d", s.ID, describe(h, d.Op), op.Client, prev)
			} else {
				r.Reordered++
				r.example("reordered", "%s got %s after %s#%d", s.ID, describe(h, d.Op), op.Client, prev)
			}
			continue
		}
		last[ok] = op.Seq
	}
	return got
}

// checkGroup checks that each shared group got every owed message, and
// each QoS 2 message at most once across its members.
func checkGroup(h *History, r *Result, g string, members []int, bySub [][]*Delivery) {
	var subAck int64
	for _, m := range members {
		if a := h.Subs[m].SubAck; a > 0 && (subAck == 0 || a < subAck) {
			subAck = a
		}
	}
	reached := map[int]map[int]bool{} // op → members
	for _, m := range members {
		for _, d := range bySub[m] {
			if d.Op < 0 {
				continue
			}
			if reached[d.Op] == nil {
				reached[d.Op] = map[int]bool{}
			}
			reached[d.Op][m] = true
		}
	}
	for op := range h.Pubs {
		n := len(reached[op])
		if owed(&h.Pubs[op], subAck) && n == 0 {
			r.Lost++
			r.example("lost", "group %s never got %s", g, describe(h, op))
		}
		if n > 1 && h.Pubs[op].QoS == 2 {
			r.GroupDup++
			r.example("group-duplicated", "group %s: %s reached %d members", g, describe(h, op), n)
		}
	}
}

// describe names operation i for an example line.
func describe(h *History, i int) string {
	op := &h.Pubs[i]
	return fmt.Sprintf("%s#%d (op %d, QoS %d, %s, conn %d, node %d, %s at %.3fs)", op.Client, op.Seq, i, op.QoS,
		op.Topic, op.Conn, op.Node, op.Status, float64(op.Invoke)/1e9)
}

// missing is how many owed deliveries persistent subscribers and groups
// still lack: the drain waits for it to reach 0.
func (h *History) missing() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	got := make([]map[int]bool, len(h.Subs))
	for i := range got {
		got[i] = map[int]bool{}
	}
	for _, d := range h.Deliveries {
		if d.Op >= 0 {
			got[d.Sub][d.Op] = true
		}
	}
	n := 0
	groupGot := map[string]map[int]bool{}
	groupAck := map[string]int64{}
	for i, s := range h.Subs {
		switch s.Kind {
		case Persistent:
			for op := range h.Pubs {
				if owed(&h.Pubs[op], s.SubAck) && !got[i][op] {
					n++
				}
			}
		case Shared:
			if groupGot[s.Group] == nil {
				groupGot[s.Group] = map[int]bool{}
			}
			for op := range got[i] {
				groupGot[s.Group][op] = true
			}
			if a := groupAck[s.Group]; s.SubAck > 0 && (a == 0 || s.SubAck < a) {
				groupAck[s.Group] = s.SubAck
			}
		}
	}
	for g, ops := range groupGot {
		for op := range h.Pubs {
			if owed(&h.Pubs[op], groupAck[g]) && !ops[op] {
				n++
			}
		}
	}
	return n
}
