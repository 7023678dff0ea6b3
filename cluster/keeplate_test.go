package cluster

import (
	"slices"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/store"
)

// The messages a disown keeps besides what the copy takes from then on
// (keeplate.go): those of the id's QueuePut ops still queued for its
// partition stream, as the kept copies their readers take (origin key from
// the place, forwarded form, Origin), but those completed since (a
// QueueDel), sent to a client (a packet id), published here (no place) or
// of another id; none once the session ended (its SessionDel).
func TestPendingCopies(t *testing.T) {
	n := &Node{cfg: Config{Partitions: 1, Node: "n2"}, inc: "i1", local: newLocalInterest()}
	s := n.Sessions(store.NewMemory()).(*sessions)
	k := originKey{"n1", "inc1", 5}
	o := broker.Origin{ClientID: "p", PacketID: 3, Nonce: 9}
	msg := func(payload string, placed bool) *broker.Message {
		m := &broker.Message{Topic: "t/a", Payload: []byte(payload), QoS: 2, From: "p"}
		if placed {
			m.SetPlace(k.place())
			m.SetOrigin(o)
		}
		return m
	}
	put := func(id string, seq uint64, pid uint16, m *broker.Message) {
		s.Append(broker.Op{Kind: broker.OpQueuePut, ClientID: id, Delivery: broker.StoredDelivery{Seq: seq, QoS: 2, PacketID: pid, Msg: m}})
	}
	pending := func() ([]pendingCopy, int) {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.pendingCopiesLocked("x")
	}
	put("x", 1, 0, msg("kept", true))
	put("x", 2, 0, msg("completed", true))
	s.Append(broker.Op{Kind: broker.OpQueueDel, ClientID: "x", Delivery: broker.StoredDelivery{Seq: 2}})
	put("x", 3, 7, msg("sent", true))
	// Published here: no place; kept under this node's key for it
	// (gl30: TestReproLateOpsKept's m4).
	local := msg("local", false)
	local.ID = 40
	put("x", 4, 0, local)
	put("y", 5, 0, msg("other", true))
	cs, unkept := pending()
	if len(cs) != 2 || unkept != 0 {
		t.Fatalf("%d copies, %d unkept; want 2 (kept, local), 0: %+v", len(cs), unkept, cs)
	}
	c := cs[0]
	if c.seq != 1 || c.k != k || c.o != o {
		t.Errorf("copy seq %d, key %+v, origin %+v; want 1, %+v, %+v", c.seq, c.k, c.o, k, o)
	}
	form, err := forwardWithGroups(c.fwd, nil, false) // as keep takes it
	if err != nil {
		t.Fatal(err)
	}
	rm, err := decodeForward(form)
	if err != nil || rm.Topic != "t/a" || string(rm.Payload) != "kept" || rm.QoS != 2 || rm.Origin != o {
		t.Errorf("kept form decodes to %+v, %v", rm, err)
	}
	if c := cs[1]; c.seq != 4 || c.k != (originKey{"n2", "i1", 40}) || !c.o.IsZero() {
		t.Errorf("the local copy: seq %d, key %+v, origin %+v; want 4, n2/i1/40, none", c.seq, c.k, c.o)
	}
	// A clean publisher's QoS 2 message carries its copy name as its
	// Origin (broker copyOrigin): kept without it, the reader claims its
	// share groups under the copy name, as ClaimServed did (lg29); for
	// one published here, the local key's (gl30: m3).
	clean := msg("clean", true)
	clean.SetOrigin(broker.Origin{Nonce: k.copy()})
	put("x", 6, 0, clean)
	cleanHere := msg("clean here", false)
	cleanHere.ID = 42
	cleanHere.SetOrigin(broker.Origin{Nonce: originKey{"n2", "i1", 42}.copy()})
	put("x", 7, 0, cleanHere)
	// One with another node's copy name and no place (handed over from
	// the node it was published on): its copies' key is not known here.
	moved := msg("moved", false)
	moved.ID = 43
	moved.SetOrigin(broker.Origin{Nonce: k.copy()})
	put("x", 8, 0, moved)
	cs, unkept = pending()
	if len(cs) != 4 || cs[2].seq != 6 || !cs[2].o.IsZero() || cs[2].topic != "t/a" {
		t.Errorf("a clean publisher's copy: %+v, want seq 6, no Origin, topic t/a", cs)
	}
	if len(cs) == 4 && (cs[3].seq != 7 || cs[3].k != (originKey{"n2", "i1", 42}) || !cs[3].o.IsZero()) {
		t.Errorf("a clean publisher's copy published here: %+v, want seq 7, key n2/i1/42, no Origin", cs[3])
	}
	if unkept != 1 {
		t.Errorf("%d unkept, want 1 (moved)", unkept)
	}
	s.Append(broker.Op{Kind: broker.OpSessionDel, ClientID: "x"})
	if cs, unkept = pending(); len(cs) != 0 || unkept != 0 {
		t.Errorf("after the session's end: %d copies, %d unkept; want none", len(cs), unkept)
	}
}

// A forward's confirmation waits for the disowns' appends of its message
// (lateKeeps.of, by copy name) while they settle, and for a while after;
// once settled keepFor ago they are dropped, and acks stop looking.
func TestLateKeeps(t *testing.T) {
	var l lateKeeps
	open := &lateKeep{copies: []uint64{7, 9}, done: make(chan struct{}), at: time.Now()}
	old := &lateKeep{copies: []uint64{7}, done: make(chan struct{}), at: time.Now().Add(-time.Minute)}
	close(old.done)
	l.add(old, time.Second)
	if got := l.of(7); len(got) != 0 || l.n.Load() != 0 {
		t.Fatalf("an append settled a minute ago is still waited for: %d (%d registered)", len(got), l.n.Load())
	}
	l.add(open, time.Second)
	if got := l.of(9); len(got) != 1 || got[0] != open {
		t.Errorf("copy 9: %v, want the open append", got)
	}
	if got := l.of(8); len(got) != 0 {
		t.Errorf("copy 8 (not kept) waits for %d appends", len(got))
	}
}

// A message kept for a disown, its op still queued, names the share groups
// of the session whose filters match its topic: the reader claims each
// for the session and gives the message for those it wins. Named none, a
// group's turn this copy took reached plain subscriptions only: lost
// (TestReproLateOpsKept's m1 and m2, session 29).
func TestPendingGroups(t *testing.T) {
	subs := []broker.SubscriptionSnapshot{{Filter: "t/#"}, {Filter: "$share/g/t/+"}, {Filter: "$share/h/t/a"}, {Filter: "$share/k/u/#"}}
	for _, c := range []struct {
		name string
		want []string
	}{
		{"t/a", []string{"g\x00t/+", "h\x00t/a"}},
		{"t/b", []string{"g\x00t/+"}},
		{"t/b/c", nil},
		{"v", nil},
	} {
		if got := pendingGroups(subs, c.name); !slices.Equal(got, c.want) {
			t.Errorf("%s: groups %q, want %q", c.name, got, c.want)
		}
	}
	if got := pendingGroups(nil, "t/a"); got != nil {
		t.Errorf("no session: groups %q, want none", got)
	}
}

// The QueuePuts of this node's claim that a disown reads back and keeps
// (keeplate.go, landedStale): those stored behind an op of a newer epoch,
// which every reader skips (test/jepsen TestClusterFull long faults, seed
// 1152: n1's e4 QueuePut of pub1#139 for g0m1 stored after n3's e5 rollup
// and n2's e6 ops, before n1's fence), but not those stored before, those
// completed or sent, another stale writer's, the ones kept as pending, or
// those a later rollup removed.
func TestLandedStale(t *testing.T) {
	k := originKey{"n3", "inc3", 466}
	put := func(seq uint64, pid uint16, payload string) broker.Op {
		m := &broker.Message{Topic: "t/0", Payload: []byte(payload), QoS: 2, From: "pub1"}
		m.SetPlace(k.place())
		return broker.Op{Kind: broker.OpQueuePut, ClientID: "g0m1", Delivery: broker.StoredDelivery{Seq: seq, QoS: 2, PacketID: pid, Msg: m}}
	}
	del := func(seq uint64) broker.Op {
		return broker.Op{Kind: broker.OpQueueDel, ClientID: "g0m1", Delivery: broker.StoredDelivery{Seq: seq}}
	}
	sess := broker.Op{Kind: broker.OpSessionPut, ClientID: "g0m1"}
	one := func(op broker.Op, epoch uint64) []byte {
		b, err := encodeOp(&op, epoch)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	pack := func(epoch uint64, ops ...broker.Op) []byte {
		rs := make([]repOp, len(ops))
		es := make([]uint64, len(ops))
		for i := range ops {
			body, err := encodeOpBody(&ops[i], "")
			if err != nil {
				t.Fatal(err)
			}
			rs[i], es[i] = repOp{kind: ops[i].Kind, body: body}, epoch
		}
		return appendPack(nil, rs, es)
	}
	type msg struct {
		b      []byte
		rollup bool
	}
	read := func(msgs []msg, skip ...uint64) ([]pendingCopy, int) {
		l := landedStale{epoch: 4}
		for _, m := range msgs {
			if err := l.add(m.b, m.rollup); err != nil {
				t.Fatal(err)
			}
		}
		return l.copies(skip)
	}
	msgs := []msg{
		{one(put(1, 0, "read by the claimer"), 4), false},
		{one(sess, 5), true},                            // n3's adoption
		{one(put(9, 0, "the claimer's own"), 6), false}, // n2's, moved in live
		{pack(4, put(2, 0, "landed"), put(3, 0, "completed"), del(3), put(4, 7, "sent")), false},
		{one(put(5, 0, "another stale writer's"), 3), false},
		{one(put(6, 0, "pending at the disown"), 4), false},
	}
	cs, unkept := read(msgs, 6)
	if len(cs) != 1 || unkept != 0 {
		t.Fatalf("%d copies, %d unkept; want 1 (landed), 0: %+v", len(cs), unkept, cs)
	}
	if c := cs[0]; c.seq != 2 || c.k != k || c.topic != "t/0" {
		t.Errorf("copy seq %d, key %+v, topic %q; want 2, %+v, t/0", c.seq, c.k, c.topic, k)
	}
	// A later owner's rollup removed them: nothing to read back.
	if cs, _ := read(append(slices.Clone(msgs), msg{one(sess, 7), true})); len(cs) != 0 {
		t.Errorf("after a later rollup: %d copies, want 0", len(cs))
	}
	// Stored before any newer op: in every reader's record.
	if cs, _ := read(msgs[:1]); len(cs) != 0 {
		t.Errorf("before the claimer's ops: %d copies, want 0", len(cs))
	}
	// Published here: no place, its key here not in the op; counted.
	local := put(8, 0, "local")
	local.Delivery.Msg = &broker.Message{Topic: "t/0", Payload: []byte("local"), QoS: 1}
	if cs, unkept := read(append(slices.Clone(msgs[:3]), msg{one(local, 4), false})); len(cs) != 0 || unkept != 1 {
		t.Errorf("a local message: %d copies, %d unkept; want 0, 1", len(cs), unkept)
	}
}

// A disown reads back only the ids whose QueuePuts were acknowledged
// within the last one to two windows (recentIDs).
func TestRecentIDs(t *testing.T) {
	var r recentIDs
	now := time.Now()
	r.note([]repOp{{id: "a", kind: broker.OpQueuePut}, {id: "b", kind: broker.OpQueueDel}}, now, time.Second)
	if !r.has("a") || r.has("b") {
		t.Fatalf("a %v b %v; want true false", r.has("a"), r.has("b"))
	}
	r.note(nil, now.Add(1500*time.Millisecond), time.Second)
	if !r.has("a") {
		t.Error("a dropped after one window")
	}
	r.note(nil, now.Add(3*time.Second), time.Second)
	if r.has("a") {
		t.Error("a kept after two windows")
	}
}
