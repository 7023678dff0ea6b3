package cluster

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/packet"
)

func TestPlanByInterest(t *testing.T) {
	r := newRemoteInterest()
	local := newLocalInterest()
	now := time.Now()
	r.applySnapshotFor(t, "b", []ikey{{"a/+", ""}, {"x/#", ""}, {"jobs/#", "g"}}, now)
	r.applySnapshotFor(t, "c", []ikey{{"a/b", ""}, {"jobs/#", "g"}, {"jobs/#", "h"}}, now)

	tests := []struct {
		topic string
		want  []target
	}{
		{"a/b", []target{{node: "b"}, {node: "c"}}},
		{"a/z", []target{{node: "b"}}},
		{"x", []target{{node: "b"}}}, // '#' matches its parent level
		{"nobody/cares", nil},
		{"$SYS/a", nil}, // leading wildcards do not match '$' topics
	}
	for _, tt := range tests {
		got := r.plan(tt.topic, 1, local)
		sortTargets(got)
		if !equalTargets(got, tt.want) {
			t.Errorf("plan(%q) = %+v, want %+v", tt.topic, got, tt.want)
		}
	}

	// Group g has members on b and c: each message goes to one of them,
	// taking turns by id; group h only on c.
	seen := map[string]int{}
	for id := range uint64(10) {
		got := r.plan("jobs/1", id, local)
		gCount := 0
		for _, tg := range got {
			for _, g := range tg.groups {
				if g == "g\x00jobs/#" {
					gCount++
					seen[tg.node]++
				}
				if g == "h\x00jobs/#" && tg.node != "c" {
					t.Errorf("group h served by %s", tg.node)
				}
			}
		}
		if gCount != 1 {
			t.Fatalf("id %d: group g planned %d times: %+v", id, gCount, got)
		}
	}
	if seen["b"] == 0 || seen["c"] == 0 {
		t.Errorf("group g did not take turns: %v", seen)
	}

	// A local member: group g is served here, no node gets it.
	local.add(ikey{"jobs/#", "g"})
	for _, tg := range r.plan("jobs/1", 3, local) {
		if slices.Contains(tg.groups, "g\x00jobs/#") {
			t.Errorf("group g planned to %s though it has a local member", tg.node)
		}
	}
}

func TestInterestDeltasAndSnapshots(t *testing.T) {
	r := newRemoteInterest()
	now := time.Now()
	// Deltas from an unknown node: fetch a snapshot first.
	if fetch, isNew := r.applyDeltas("b", "inc1", []delta{{1, true, ikey{"a", ""}}}, now); !fetch || !isNew {
		t.Fatalf("unknown node's deltas: fetch %v new %v, want true, true", fetch, isNew)
	}
	// A delta arriving while the fetch runs makes it fetch again.
	r.applyDeltas("b", "inc1", []delta{{2, true, ikey{"b", ""}}}, now)
	if again := r.applySnapshot("b", "inc1", 1, []ikey{{"a", ""}}, true); !again {
		t.Fatal("a newer version seen during the fetch did not ask for another")
	}
	if again := r.applySnapshot("b", "inc1", 2, []ikey{{"a", ""}, {"b", ""}}, true); again {
		t.Fatal("fetch again though current")
	}
	// In-order deltas apply; old ones are skipped.
	if fetch, _ := r.applyDeltas("b", "inc1", []delta{{2, true, ikey{"b", ""}}, {3, false, ikey{"a", ""}}, {4, true, ikey{"c/+", ""}}}, now); fetch {
		t.Fatal("in-order deltas asked for a snapshot")
	}
	if got := nodesFor(r, "a"); got != nil {
		t.Errorf("a: %v after its removal", got)
	}
	if got := nodesFor(r, "c/1"); !slices.Equal(got, []string{"b"}) {
		t.Errorf("c/1: %v, want [b]", got)
	}
	// A gap, a heartbeat ahead, or a new incarnation: snapshot.
	if fetch, _ := r.applyDeltas("b", "inc1", []delta{{6, true, ikey{"d", ""}}}, now); !fetch {
		t.Error("a gap in versions did not ask for a snapshot")
	}
	r.applySnapshot("b", "inc1", 6, []ikey{{"d", ""}}, true)
	if fetch, _ := r.heartbeat("b", "inc1", 7, now); !fetch {
		t.Error("a heartbeat ahead of what was applied did not ask for a snapshot")
	}
	r.applySnapshot("b", "inc1", 7, []ikey{{"d", ""}}, true)
	if fetch, _ := r.heartbeat("b", "inc2", 1, now); !fetch {
		t.Error("a restarted node did not ask for a snapshot")
	}
	r.applySnapshot("b", "inc2", 1, []ikey{{"e", ""}}, true)
	if got := nodesFor(r, "d"); got != nil {
		t.Errorf("d kept after the node restarted without it: %v", got)
	}
	// Silence: the node and its interest are forgotten.
	if gone := r.expire(now.Add(time.Second)); !slices.Equal(gone, []string{"b"}) {
		t.Errorf("expire: %v", gone)
	}
	if got := nodesFor(r, "e"); got != nil || r.tree.Len() != 0 {
		t.Errorf("interest of a gone node kept: %v, %d entries", got, r.tree.Len())
	}
}

// TestExpireExcusesOwnStall: a node back from a stall of its own (it did
// not run) does not count the stall as its peers' silence
// (remoteInterest.excuseStall): counted, it dropped at its first tick a
// peer whose heartbeat it had not read yet, and held for it
// (TestReproPausedNodeHeldOrder's pz-far). A peer heard since the stall
// ended is excused no more than since; one silent past the stall still
// goes.
func TestExpireExcusesOwnStall(t *testing.T) {
	r := newRemoteInterest()
	t0 := time.Now()
	ms := time.Millisecond
	r.heartbeat("before", "inc", 0, t0)             // heard, then this node stalls 7 s
	r.heartbeat("after", "inc", 0, t0.Add(7000*ms)) // its backlog, read at once after the stall
	if !r.excuseStall(7000*ms, t0.Add(7005*ms)) {   // found by the expiry loop's first tick
		t.Error("a 7-s stall did not report a peer it kept (the fence after it)")
	}
	short := newRemoteInterest()
	short.heartbeat("b", "inc", 0, t0)
	if short.excuseStall(2500*ms, t0.Add(2600*ms)) {
		t.Error("a 2.5-s stall reported a peer it kept: it would have dropped none")
	}
	if gone := r.expire(t0.Add(7005*ms - deadAfter)); len(gone) != 0 { // that tick
		t.Fatalf("dropped at the first tick after the stall: %v", gone)
	}
	if gone := r.expire(t0.Add(6990 * ms)); len(gone) != 0 { // deadAfter after the stall, almost
		t.Fatalf("dropped within deadAfter of the stall's end: %v", gone)
	}
	// Silent deadAfter past the stall, both go: "after" was excused
	// the 5 ms since it was heard, not the stall.
	gone := r.expire(t0.Add(7010 * ms))
	if slices.Sort(gone); !slices.Equal(gone, []string{"after", "before"}) {
		t.Errorf("silent deadAfter past the stall: %v dropped, want both", gone)
	}
}

func TestLocalInterestCounts(t *testing.T) {
	l := newLocalInterest()
	k := ikey{"a/#", ""}
	l.add(k)
	l.add(k)
	l.remove(k)
	if !l.has(k) {
		t.Fatal("removed while a subscription is left")
	}
	l.remove(k)
	ds, seq := l.take()
	if seq != 2 || len(ds) != 2 || !ds[0].add || ds[1].add {
		t.Fatalf("deltas %+v seq %d, want an add and a remove, version 2", ds, seq)
	}
}

func TestWireRoundTrip(t *testing.T) {
	props := &packet.Properties{ContentType: "c", User: []packet.UserProperty{{Key: "k", Value: "v"}}}
	props.Set(packet.PropContentType)
	props.Set(packet.PropUserProperty)
	m := &broker.Message{Topic: "a b/c.d", Payload: []byte("pay"), QoS: 2, Retain: true, From: "me", Props: props}
	m.SetExpires(time.Now().Add(time.Minute))
	pub, err := encodePublish(m)
	if err != nil {
		t.Fatal(err)
	}
	b := encodeForward(m, []string{"g\x00f"}, pub)
	rm, err := decodeForward(b)
	if err != nil {
		t.Fatal(err)
	}
	if rm.Topic != m.Topic || !bytes.Equal(rm.Payload, m.Payload) || rm.QoS != 2 || !rm.Retain || rm.From != "me" ||
		!slices.Equal(rm.Groups, []string{"g\x00f"}) || rm.Props == nil || rm.Props.ContentType != "c" || len(rm.Props.User) != 1 {
		t.Fatalf("round trip: %+v", rm)
	}
	if rm.ExpiresIn < 59*time.Second || rm.ExpiresIn > time.Minute {
		t.Errorf("expiry left %v, want about a minute", rm.ExpiresIn)
	}
	for i := range len(b) {
		if _, err := decodeForward(b[:i]); err == nil {
			t.Fatalf("a forward cut at %d bytes decoded", i)
		}
	}
	c, err := decodeControl(encodeDeltas("n", "i", []delta{{5, true, ikey{"f", "g"}}}))
	if err != nil || c.kind != 'D' || len(c.deltas) != 1 || c.deltas[0] != (delta{5, true, ikey{"f", "g"}}) {
		t.Errorf("deltas round trip: %+v %v", c, err)
	}
	inc, seq, keys, err := decodeSnapshot(encodeSnapshot("i", 9, []ikey{{"f", ""}}))
	if err != nil || inc != "i" || seq != 9 || len(keys) != 1 {
		t.Errorf("snapshot round trip: %v %v %v %v", inc, seq, keys, err)
	}
}

// FuzzDecode: bytes from a peer never crash a node.
func FuzzDecode(f *testing.F) {
	f.Add(encodeHeartbeat("n", "i", 3))
	f.Add(encodeDeltas("n", "i", []delta{{1, true, ikey{"a/#", ""}}}))
	f.Add(encodeSnapshot("i", 1, []ikey{{"a", "g"}}))
	f.Add(encodeSnapshotParts("i", 1, []ikey{{"a", "g"}, {"b", ""}}, 8)[1])
	m := &broker.Message{Topic: "t", Payload: []byte("p"), QoS: 1}
	pub, _ := encodePublish(m)
	f.Add(encodeForward(m, nil, pub))
	f.Fuzz(func(t *testing.T, b []byte) {
		decodeForward(b)
		decodeControl(b)
		decodeSnapshot(b)
		decodeSnapshotPart(b)
		decodeSession("id", b)
	})
}

func (r *remoteInterest) applySnapshotFor(t *testing.T, node string, keys []ikey, now time.Time) {
	t.Helper()
	if fetch, _ := r.heartbeat(node, "inc", 1, now); !fetch {
		t.Fatal("new node: no fetch")
	}
	r.applySnapshot(node, "inc", 1, keys, true)
}

func nodesFor(r *remoteInterest, topic string) []string {
	var out []string
	r.tree.Match(topic, func(_, _ string, node string, _ struct{}) { out = append(out, node) })
	slices.Sort(out)
	return out
}

func sortTargets(ts []target) {
	slices.SortFunc(ts, func(a, b target) int {
		if a.node < b.node {
			return -1
		}
		if a.node > b.node {
			return 1
		}
		return 0
	})
}

func equalTargets(a, b []target) bool {
	return slices.EqualFunc(a, b, func(x, y target) bool { return x.node == y.node && slices.Equal(x.groups, y.groups) })
}

func TestOwnerKeyAndRecord(t *testing.T) {
	seen := map[string]string{}
	for _, id := range []string{"", "a", "A", "a.b", "a/b", "a=2E", "a b", "é", "=", "dev-1_x"} {
		k := ownerKey(id)
		for i := 0; i < len(k); i++ {
			c := k[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-_=.", c) >= 0) {
				t.Errorf("ownerKey(%q) = %q: byte %q not allowed in a KV key", id, k, c)
			}
		}
		if other, dup := seen[k]; dup {
			t.Errorf("ownerKey(%q) = ownerKey(%q) = %q", id, other, k)
		}
		seen[k] = id
	}
	node, epoch, err := decodeOwner(encodeOwner("n2", 42))
	if err != nil || node != "n2" || epoch != 42 {
		t.Errorf("owner record round trip: %q %d %v", node, epoch, err)
	}
	// With a will (cleanwill.go): the node's name is no longer the
	// record's tail, and a truncated record is an error, not a will.
	will := &broker.Message{Topic: "w/t", Payload: []byte("gone"), QoS: 1, Retain: true, From: "c1"}
	b, err := encodeOwnerWill("n3", 7, will)
	if err != nil {
		t.Fatal(err)
	}
	node, epoch, got, err := decodeOwnerWill(b)
	if err != nil || node != "n3" || epoch != 7 || got == nil || got.Topic != "w/t" || string(got.Payload) != "gone" ||
		got.QoS != 1 || !got.Retain || got.From != "c1" {
		t.Errorf("owner record with a will, round trip: %q %d %+v %v", node, epoch, got, err)
	}
	if node, _, err := decodeOwner(b); err != nil || node != "n3" {
		t.Errorf("decodeOwner of a record with a will: %q %v", node, err)
	}
	for i := range len(b) - 1 {
		if _, _, w, err := decodeOwnerWill(b[:i]); err == nil {
			t.Errorf("owner record cut to %d of %d bytes decoded (will %+v)", i, len(b), w)
		}
	}
	if b, _ := encodeOwnerWill("n1", 1, nil); !bytes.Equal(b, encodeOwner("n1", 1)) {
		t.Errorf("a record without a will is not the old form: % x", b)
	}
}

func TestEpochsForgotten(t *testing.T) {
	o := &owners{epochs: make(map[string]epochAt)}
	o.noteEpoch("x", 3)
	o.sweep(time.Now())
	if o.epochs["x"].epoch != 3 {
		t.Fatal("a fresh epoch was forgotten")
	}
	o.sweep(time.Now().Add(2 * epochTTL))
	if len(o.epochs) != 0 {
		t.Fatal("an old epoch was kept")
	}
}

func TestSessionRoundTrip(t *testing.T) {
	m := &broker.Message{Topic: "a/b", Payload: []byte("p"), QoS: 2, From: "x"}
	will := &broker.Message{Topic: "w", Payload: []byte("bye"), QoS: 1}
	rec := &broker.StoredSession{ClientID: "c", Expiry: 600, Will: will, WillAt: time.Now().Add(time.Minute),
		Subs: []broker.StoredSub{{Filter: "$share/g/a/#", Opts: packet.SubOptions{QoS: 2, RetainAsPublished: true, RetainHandling: 2}, ID: 7},
			{Filter: "b", Opts: packet.SubOptions{QoS: 1, NoLocal: true}}},
		Queue:   []broker.StoredDelivery{{Msg: m, QoS: 2, PacketID: 9, Released: true, SubIDs: []uint32{7}}, {Msg: m, QoS: 1, Retain: true}},
		Inbound: []uint16{3, 4}}
	b, err := encodeSession(rec, "")
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeSession("c", b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Expiry != 600 || got.Will == nil || string(got.Will.Payload) != "bye" || time.Until(got.WillAt) < 59*time.Second ||
		len(got.Subs) != 2 || got.Subs[0] != rec.Subs[0] || got.Subs[1] != rec.Subs[1] ||
		len(got.Queue) != 2 || got.Queue[0].PacketID != 9 || !got.Queue[0].Released || got.Queue[0].QoS != 2 ||
		!slices.Equal(got.Queue[0].SubIDs, []uint32{7}) || !got.Queue[1].Retain || got.Queue[1].Msg.Topic != "a/b" ||
		!slices.Equal(got.Inbound, []uint16{3, 4}) {
		t.Fatalf("round trip: %+v", got)
	}
	for i := range len(b) {
		if _, err := decodeSession("c", b[:i]); err == nil {
			t.Fatalf("a session cut at %d bytes decoded", i)
		}
	}
}

// TestInterestMessagesWithinLimit: deltas and snapshots larger than one
// NATS message go in several, each within the limit (but a lone entry
// larger than it), and decode to what was encoded, in order.
func TestInterestMessagesWithinLimit(t *testing.T) {
	var keys []ikey
	var ds []delta
	for i := range 500 {
		k := ikey{fmt.Sprintf("devices/%d/cmd", i), ""}
		if i%7 == 0 {
			k.group = "g"
		}
		keys = append(keys, k)
		ds = append(ds, delta{uint64(i + 1), i%3 != 0, k})
	}
	big := ikey{strings.Repeat("x", 3000), ""}
	keys = append(keys, big)
	ds = append(ds, delta{501, true, big})
	const limit = 1024
	var gotDs []delta
	msgs := encodeDeltasLimited("n", "i", ds, limit)
	for _, b := range msgs {
		if len(b) > limit && !bytes.Contains(b, []byte(big.filter)) {
			t.Errorf("a delta message of %d bytes, limit %d", len(b), limit)
		}
		c, err := decodeControl(b)
		if err != nil {
			t.Fatal(err)
		}
		gotDs = append(gotDs, c.deltas...)
	}
	if len(msgs) < 2 || !slices.Equal(gotDs, ds) {
		t.Errorf("%d delta messages gave %d deltas back, want %d in order", len(msgs), len(gotDs), len(ds))
	}
	if got := encodeDeltasLimited("n", "i", nil, limit); len(got) != 0 {
		t.Errorf("no deltas made %d messages", len(got))
	}

	parts := encodeSnapshotParts("inc", 42, keys, limit)
	var gotKeys []ikey
	for i, b := range parts {
		if len(b) > limit && !bytes.Contains(b, []byte(big.filter)) {
			t.Errorf("a snapshot part of %d bytes, limit %d", len(b), limit)
		}
		p, err := decodeSnapshotPart(b)
		if err != nil {
			t.Fatal(err)
		}
		if p.inc != "inc" || p.seq != 42 || p.part != uint64(i) || p.parts != uint64(len(parts)) {
			t.Errorf("part %d: %+v", i, p)
		}
		gotKeys = append(gotKeys, p.keys...)
		for cut := range len(b) {
			if _, err := decodeSnapshotPart(b[:cut]); err == nil {
				t.Fatalf("part %d cut at %d bytes decoded", i, cut)
			}
		}
	}
	if len(parts) < 2 || !slices.Equal(gotKeys, keys) {
		t.Errorf("%d parts gave %d keys back, want %d in order", len(parts), len(gotKeys), len(keys))
	}
	if empty := encodeSnapshotParts("inc", 1, nil, limit); len(empty) != 1 {
		t.Errorf("an empty snapshot made %d parts, want 1", len(empty))
	} else if p, err := decodeSnapshotPart(empty[0]); err != nil || p.parts != 1 || len(p.keys) != 0 {
		t.Errorf("empty snapshot part: %+v %v", p, err)
	}
}
