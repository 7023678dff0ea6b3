package cluster

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/roost-mqtt/roost/broker"
)

// A node's orphan interest matches its persistent filter keys only, plain
// and shared (not its clean sessions' plain keys, nor groups with clean
// members only), until dropped; keeping it again replaces it.
func TestOrphanInterest(t *testing.T) {
	o := newOrphanInterest()
	if got := o.match("a/b"); got != nil {
		t.Fatalf("empty: %v", got)
	}
	o.keep("n1", map[ikey]struct{}{persistKey("a/#"): {}, persistKey("a/+"): {}, {"a/+", ""}: {},
		{"g/#", "grp"}: {}, {"clean/#", ""}: {}, {"h/#", "clean"}: {}, persistShareKey("g/#", "grp"): {}})
	o.keep("n2", map[ikey]struct{}{persistKey("b"): {}, {"b", ""}: {}})
	o.keep("n3", map[ikey]struct{}{{"a/#", ""}: {}}) // clean sessions only
	if got := o.match("a/b"); len(got) != 1 || got[0].node != "n1" || !got[0].plain || got[0].groups != nil {
		t.Errorf("a/b: %+v, want n1 once, plain", got)
	}
	if got := o.match("g/x"); len(got) != 1 || got[0].node != "n1" || got[0].plain || !slices.Equal(got[0].groups, []string{"grp\x00g/#"}) {
		t.Errorf("g/x: %+v, want n1's group grp", got)
	}
	if got := o.match("h/x"); got != nil {
		t.Errorf("h/x matched %+v: a group with clean members only is not held for", got)
	}
	if got := o.match("clean/x"); got != nil {
		t.Errorf("clean/x matched %v: a clean session dies with its node", got)
	}
	if !o.matchNode("n1", "a/b").plain || o.matchNode("n2", "a/b").plain || o.matchNode("n3", "a/b").plain {
		t.Errorf("matchNode a/b: n1 %v n2 %v n3 %v, want true false false",
			o.matchNode("n1", "a/b"), o.matchNode("n2", "a/b"), o.matchNode("n3", "a/b"))
	}
	o.keep("n1", map[ikey]struct{}{persistKey("c"): {}})
	if got := o.match("a/b"); got != nil {
		t.Errorf("a/b after n1's interest was replaced: %v", got)
	}
	nodes := o.nodes()
	slices.Sort(nodes)
	if !slices.Equal(nodes, []string{"n1", "n2"}) {
		t.Errorf("nodes %v (n3 had no persistent filter)", nodes)
	}
	o.drop("n1")
	o.drop("n1")
	if got := o.match("c"); got != nil || o.count.Load() != 1 {
		t.Errorf("after drop: c matched %v, %d nodes counted", got, o.count.Load())
	}
}

// A watched session gets each origin once, whichever copy comes first;
// others always; a watch ends with its time.
func TestOriginWatch(t *testing.T) {
	n := &Node{}
	k1 := originKey{"n1", "i1", 7}
	n.watch.watch("s", time.Now().Add(time.Minute))
	held := n.dedupPick(k1, nil)
	if !held("s") || !held("s") {
		t.Fatal("first copy refused, or the same copy decided twice differently")
	}
	fwd := n.dedupPick(k1, nil)
	if fwd("s") {
		t.Error("second copy of the same origin delivered to a watched session")
	}
	if !fwd("other") {
		t.Error("a session not watched was refused")
	}
	if !n.dedupPick(originKey{"n1", "i2", 7}, nil)("s") {
		t.Error("same id from another incarnation refused")
	}
	if n.dedupPick(originKey{"n1", "i1", 8}, func(string) bool { return false })("s") {
		t.Error("the inner pick's refusal was overridden")
	}
	n.watch.sweep(time.Now().Add(2 * time.Minute))
	// No watch left: the inner pick as it was (nil: every session).
	if n.watch.n.Load() != 0 || n.dedupPick(k1, nil) != nil {
		t.Error("watch did not end")
	}
}

// A held message reads back with its origin and the forwarded message.
// A copy held for another node of a message published on this node
// after a watched session came here is not delivered to it (its local
// delivery reached it); one published before, or by another process of
// this node, is.
func TestOriginWatchLocal(t *testing.T) {
	n := &Node{}
	n.watch.self = originKey{node: "me", inc: "i1"}
	n.watch.noteLocal(5)
	n.watch.noteLocal(3) // out of order: the highest counts
	n.watch.watch("s", time.Now().Add(time.Minute))
	n.watch.noteLocal(6)
	if !n.dedupPick(originKey{"me", "i1", 5}, nil)("s") {
		t.Error("held copy of a message published here before the session came was refused")
	}
	if n.dedupPick(originKey{"me", "i1", 6}, nil)("s") {
		t.Error("held copy of a message published here after the session came was delivered again")
	}
	if !n.dedupPick(originKey{"me", "i0", 6}, nil)("s") {
		t.Error("a message of this node's previous process was refused")
	}
	if !n.dedupPick(originKey{"other", "i1", 6}, nil)("s") {
		t.Error("another node's message was refused")
	}
}

// A session taken from the stream here while a watch from before is on (a
// fence here watched it: fenceHold) is watched as from its arrival for
// the messages published here: one published while it was away did not
// reach it locally, and its held copy is its own; what it was seen to get
// by forward stays seen. A held copy that the copy the arrival replaces
// took (an earlier adoption's read ahead, a follower) is the arrival's
// to read again (seed 414's five).
func TestOriginWatchArrive(t *testing.T) {
	n := &Node{}
	n.watch.self = originKey{node: "me", inc: "i1"}
	n.watch.watch("s", time.Now().Add(time.Minute)) // here, then fenced and gone
	if !n.dedupPick(originKey{"n2", "i1", 9}, nil)("s") {
		t.Fatal("first copy refused")
	}
	aheadK := originKey{"n3", "i1", 11}
	if !n.dedupPickHeld(aheadK, nil, "")("s") || n.dedupPickHeld(aheadK, nil, "")("s") {
		t.Fatal("a held copy refused the first time, or delivered twice before the arrival")
	}
	n.watch.noteLocal(4) // published here while s was away
	n.watch.watch("s", time.Now().Add(2*time.Minute))
	if n.dedupPick(originKey{"me", "i1", 4}, nil)("s") {
		t.Fatal("a second watch started the watch afresh; it extends it only")
	}
	n.watch.arrive("s", time.Now().Add(time.Minute))
	if !n.dedupPick(originKey{"me", "i1", 4}, nil)("s") {
		t.Error("held copy of a message published here while the session was away refused after its arrival")
	}
	n.watch.noteLocal(5)
	if n.dedupPick(originKey{"me", "i1", 5}, nil)("s") {
		t.Error("held copy of a message published here after the arrival delivered again")
	}
	if n.dedupPick(originKey{"n2", "i1", 9}, nil)("s") {
		t.Error("a copy seen before the arrival delivered again")
	}
	if !n.dedupPickHeld(aheadK, nil, "")("s") {
		t.Error("a held copy the replaced copy took refused after the arrival")
	}
	if n.dedupPick(aheadK, nil)("s") {
		t.Error("a held copy delivered after the arrival not noted for it")
	}
	if n.watch.n.Load() != 1 {
		t.Errorf("%d watches, want 1", n.watch.n.Load())
	}
}

// A session moved here live while a watch from an earlier stay is on
// counts the messages published here from its arrival (movedIn): one
// published while it was on another node and held for that node is what
// the move's reads of that node's held subject bring, and it is the
// session's (TestClusterFull long faults seed 615: 29 lost). Unwatched,
// movedIn starts no watch.
func TestOriginWatchMovedIn(t *testing.T) {
	n := &Node{}
	n.watch.self = originKey{node: "me", inc: "i1"}
	n.watch.watch("s", time.Now().Add(time.Minute)) // a fence or claim here watched s, then s moved away
	if !n.dedupPick(originKey{"n2", "i1", 9}, nil)("s") {
		t.Fatal("first copy refused")
	}
	n.watch.noteLocal(4) // published here while s was away: held for its node
	n.watch.movedIn("s")
	if !n.dedupPick(originKey{"me", "i1", 4}, nil)("s") {
		t.Error("held copy of a message published here while the session was on another node refused after its move here")
	}
	n.watch.noteLocal(5)
	if n.dedupPick(originKey{"me", "i1", 5}, nil)("s") {
		t.Error("held copy of a message published here after the move delivered again")
	}
	if n.dedupPick(originKey{"n2", "i1", 9}, nil)("s") {
		t.Error("a copy seen before the move delivered again")
	}
	n.watch.movedIn("t")
	if n.watch.n.Load() != 1 {
		t.Errorf("%d watches, want 1 (movedIn watched an unwatched session)", n.watch.n.Load())
	}
}

func TestHeldRoundTrip(t *testing.T) {
	fwd := []byte{wireVersion, 2}
	fwd = appendString(fwd, "pub")
	fwd = append(fwd, 0, 0) // no expiry, no groups
	k := originKey{"n3", "inc", 1 << 40}
	b := encodeHeld(k, fwd)
	got, _, err := decodeHeld(b)
	if err != nil && got != k {
		t.Fatalf("origin %+v, err %v", got, err)
	}
	if got != k {
		t.Errorf("origin %+v, want %+v", got, k)
	}
	if _, _, err := decodeHeld(append([]byte{heldVersion + 1}, b[1:]...)); err == nil {
		t.Error("another version read")
	}
	// The forwarded form a follower keeps for a session lost here (keepHeld).
	if f, ok := heldForm(b); !ok || string(f) != string(fwd) {
		t.Errorf("heldForm: %q, %v; want %q", f, ok, fwd)
	}
	if _, ok := heldForm(append([]byte{heldVersion + 1}, b[1:]...)); ok {
		t.Error("heldForm read another version")
	}
	for cut := 1; cut < len(b)-len(fwd); cut++ {
		if _, _, err := decodeHeld(b[:cut]); err == nil {
			t.Errorf("cut at %d read", cut)
		}
	}
}

// A node forgotten for silence (paused, cut off) is held for at once, as
// one whose routes closed: its persistent filters and share groups become
// its orphan interest, its clean ones do not; a node back, or adopted
// (drop), is held for no more, and its routes closing later changes
// nothing.
func TestOrphanInterestSilent(t *testing.T) {
	r := newRemoteInterest()
	now := time.Now()
	for _, name := range []string{"n2", "n3"} {
		p, _ := r.seen(name, now)
		p.synced = true
		p.keys[persistKey("a/#")] = struct{}{}
		p.keys[persistShareKey("g/#", "grp")] = struct{}{}
		p.keys[ikey{"clean/#", ""}] = struct{}{}
	}
	if gone := r.expire(now.Add(time.Second)); len(gone) != 2 {
		t.Fatalf("expired %v, want n2 and n3", gone)
	}
	got := r.orphans.match("a/b")
	slices.SortFunc(got, func(a, b orphanMatch) int { return strings.Compare(a.node, b.node) })
	if len(got) != 2 || got[0].node != "n2" || got[1].node != "n3" || !got[0].plain || !got[1].plain {
		t.Fatalf("silent nodes: a/b matched %+v, want n2 and n3 (plain)", got)
	}
	r.orphans.drop("n3") // adopted, or back with its snapshot
	if gone := r.forgetUnrouted(map[string]bool{}); gone != nil {
		t.Errorf("routes closed after the silence: forgot %v again", gone)
	}
	if got := r.orphans.match("a/b"); len(got) != 1 || got[0].node != "n2" || !got[0].plain || r.orphans.count.Load() != 1 {
		t.Errorf("after n3's drop: a/b matched %+v, %d nodes counted; want n2 (plain), 1", got, r.orphans.count.Load())
	}
	// Its persistent share group membership is held for too (cause 7).
	if got := r.orphans.match("g/x"); len(got) != 1 || got[0].plain || !slices.Equal(got[0].groups, []string{"grp\x00g/#"}) {
		t.Errorf("g/x matched %+v, want n2's group grp", got)
	}
	if got := r.orphans.match("clean/x"); got != nil {
		t.Errorf("clean/x matched %v: a clean session dies with its node", got)
	}
	r.orphans.drop("n2")
	if got := r.orphans.match("a/b"); got != nil || r.orphans.count.Load() != 0 {
		t.Errorf("after drop: a/b matched %v, %d nodes counted", got, r.orphans.count.Load())
	}
}

// A session taken from the stream reads the held subjects of every node
// this one heard from since it started: a dead node stays among them
// after it is forgotten and its orphan interest dropped (the janitor's
// scan, heldGrace later), when a claim's later try may still need its
// held subject (TestClusterQoS2ResendUnconfirmedIsRouted).
func TestHeardNodesKeepsTheDead(t *testing.T) {
	r := newRemoteInterest()
	now := time.Now()
	r.mu.Lock()
	for _, name := range []string{"n3", "n2"} {
		p, _ := r.seen(name, now)
		p.synced = true
	}
	r.forget(r.peers["n2"]) // its routes closed
	r.mu.Unlock()
	r.orphans.drop("n2") // its sessions adopted
	if got := r.nodes(); !slices.Equal(got, []string{"n3"}) {
		t.Fatalf("live nodes %v, want n3", got)
	}
	if got := r.orphans.nodes(); len(got) != 0 {
		t.Fatalf("orphan interest of %v, want none", got)
	}
	if got := r.heardNodes(); !slices.Equal(got, []string{"n2", "n3"}) {
		t.Errorf("heard nodes %v, want n2 and n3", got)
	}
}

// A hold is published again when its stream did not answer or the same
// message id was in process (JetStream's 409, 10158), not for other
// errors.
func TestHoldAgain(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{jetstream.ErrNoStreamResponse, true},
		{fmt.Errorf("wrapped: %w", &jetstream.APIError{Code: 409, ErrorCode: jsDupInProcess, Description: "duplicate message id is in process"}), true},
		{&jetstream.APIError{Code: 503, ErrorCode: 10077, Description: "maximum messages exceeded"}, false},
		{errors.New("other"), false},
	} {
		if got := holdAgain(c.err); got != c.want {
			t.Errorf("holdAgain(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

// The group claims of one Origin go to one stream, whichever node held
// the copy: a message id is unique within a stream only. Without an
// Origin, a claim is the copy name's: a held copy's reader (claimMsg)
// and the adoption of the message queued (copyClaimMsg, from the
// delivery's copy name) make one claim, and two messages two.
func TestClaimSubject(t *testing.T) {
	s := &sessions{n: &Node{cfg: Config{Partitions: 8}}}
	o := broker.Origin{ClientID: "pub", PacketID: 7, Nonce: 99}
	// Two node names in different partitions: the case that split.
	a, b := "n1", ""
	for i := 2; i < 100 && b == ""; i++ {
		if c := "n" + strconv.Itoa(i); s.partition(c) != s.partition(a) {
			b = c
		}
	}
	if b == "" {
		t.Fatal("no two node names in different partitions")
	}
	if x, y := s.claimMsg(originKey{a, "i", 1}, o, "g\x00f", "m"), s.claimMsg(originKey{b, "j", 5}, o, "g\x00f", "m"); x.Subject != y.Subject ||
		x.Header.Get(jetstream.MsgIDHeader) != y.Header.Get(jetstream.MsgIDHeader) {
		t.Errorf("one Origin claimed as %q %q and %q %q", x.Subject, x.Header.Get(jetstream.MsgIDHeader), y.Subject, y.Header.Get(jetstream.MsgIDHeader))
	}
	k := originKey{a, "i", 1}
	held, queued := s.claimMsg(k, broker.Origin{}, "g\x00f", "m"), s.copyClaimMsg(k.copy(), "g\x00f", "m")
	if held.Subject != queued.Subject || held.Header.Get(jetstream.MsgIDHeader) != queued.Header.Get(jetstream.MsgIDHeader) {
		t.Errorf("a held copy claimed as %q %q, its queued copy as %q %q", held.Subject, held.Header.Get(jetstream.MsgIDHeader),
			queued.Subject, queued.Header.Get(jetstream.MsgIDHeader))
	}
	if other := s.claimMsg(originKey{b, "i", 1}, broker.Origin{}, "g\x00f", "m"); other.Header.Get(jetstream.MsgIDHeader) == held.Header.Get(jetstream.MsgIDHeader) {
		t.Errorf("two nodes' messages claimed under one id %q", held.Header.Get(jetstream.MsgIDHeader))
	}
}

// Every copy of a message carries its origin key, and the broker tells
// them apart by it (broker.RemoteMessage.Copy): a held copy names the same
// copy as the forward of that message, another message or another
// process of the node another one, and a message without an id none.
func TestHeldCopyKey(t *testing.T) {
	k := originKey{"n3", "inc", 42}
	m := &broker.Message{Topic: "t", QoS: 2, Payload: []byte("p"), From: "pub"}
	pub, err := encodePublish(m)
	if err != nil {
		t.Fatal(err)
	}
	_, rm, err := decodeHeld(encodeHeld(k, encodeForwardOrigin(m, nil, pub, broker.Origin{})))
	if err != nil {
		t.Fatal(err)
	}
	if rm.Copy == 0 || rm.Copy != k.copy() {
		t.Errorf("held copy %x, want the forward's %x", rm.Copy, k.copy())
	}
	for _, other := range []originKey{{"n3", "inc", 43}, {"n3", "inc2", 42}, {"n2", "inc", 42}, {"n3inc", "", 42}} {
		if other.copy() == k.copy() {
			t.Errorf("%+v names the copy of %+v", other, k)
		}
	}
	if c := (originKey{"n3", "inc", 0}).copy(); c != 0 {
		t.Errorf("no message id: copy %x, want 0", c)
	}
}

// TestFollowBackoff: the follower of what is held for this node backs
// off while its follows keep failing, and starts afresh after one that
// ran steadily (drainend's left: it stayed at 2 s for good).
func TestFollowBackoff(t *testing.T) {
	var b time.Duration
	var got []time.Duration
	for range 7 {
		b = followBackoff(b, time.Millisecond)
		got = append(got, b)
	}
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond,
		1600 * time.Millisecond, 2 * time.Second, 2 * time.Second}
	if !slices.Equal(got, want) {
		t.Fatalf("failing follows waited %v, want %v", got, want)
	}
	if b = followBackoff(b, followSteady); b != 100*time.Millisecond {
		t.Fatalf("after a follow of %v the wait is %v, want 100ms", followSteady, b)
	}
	if b = followBackoff(b, time.Second); b != 200*time.Millisecond {
		t.Fatalf("the next failing follow waited %v, want 200ms", b)
	}
}

// A session taken from the stream (arrive) forgets the origins its
// disowned copy here took, whose kept copies it is to get, and keeps
// those it got before the disown (TestReproFenceWindowWatched).
func TestOriginWatchForgetsDisownedCopy(t *testing.T) {
	var w originWatch
	until := time.Now().Add(time.Minute)
	w.watch("s", until)
	before := originKey{node: "n3", inc: "a", id: 1}
	during := originKey{node: "n3", inc: "a", id: 2}
	if !w.first("s", before, false) || !w.first("s", during, true) {
		t.Fatal("a first copy was taken for a duplicate")
	}
	if w.first("s", during, false) {
		t.Fatal("the disowned copy got a message twice")
	}
	w.arrive("s", until)
	if w.first("s", before, false) {
		t.Error("after the adoption, a message the session got before its disown came again")
	}
	if !w.first("s", during, false) {
		t.Error("after the adoption, the kept copy of a message the disowned copy took was dropped")
	}
	if w.first("s", during, false) {
		t.Error("after the adoption, the kept copy came twice")
	}
}

// A message published here after a session's watch began counts as
// delivered locally, unless the copy read is one kept for the session
// (keep.go: its disowned copy here took it, the session was elsewhere);
// that one comes once (TestReproGroupKeptLocal).
func TestOriginWatchKeptLocal(t *testing.T) {
	w := originWatch{self: originKey{node: "n1", inc: "a"}}
	w.watch("s", time.Now().Add(time.Minute))
	local := originKey{node: "n1", inc: "a", id: 7}
	w.noteLocal(local.id)
	if w.first("s", local, false) {
		t.Fatal("a held copy of a message published here after the watch began was taken for a new one")
	}
	if !w.firstKept("s", local, false) {
		t.Fatal("the kept copy of a message published here, taken by the disowned copy, was dropped")
	}
	if w.firstKept("s", local, false) {
		t.Error("the kept copy came twice")
	}
}

// goneGroupsMsgID is a hold id of its own: not the routing's hold of the
// same message for the node (plain or groups-only), so that JetStream
// does not drop it as a repeat (TestReproGroupGoneHeld).
func TestGoneGroupsMsgID(t *testing.T) {
	k := originKey{node: "n2", inc: "i", id: 42}
	o := broker.Origin{ClientID: "p", PacketID: 3, Nonce: 9}
	for _, o := range []broker.Origin{{}, o} {
		id := goneGroupsMsgID(k, o, "n1")
		if id == holdMsgID(k, o, "n1", false) || id == holdMsgID(k, o, "n1", true) {
			t.Errorf("origin %v: the groups' hold id %q is a routing hold's", o, id)
		}
		if id != goneGroupsMsgID(k, o, "n1") || id == goneGroupsMsgID(k, o, "n3") {
			t.Errorf("origin %v: the groups' hold id %q is not one per message and node", o, id)
		}
	}
}

// awayMarks: the others may hold for this node after a stall of its
// expiry loop (seen on its next run, or while it has not run again) or
// after it dropped a peer, for the window asked, and not in steady runs.
func TestAwayMarks(t *testing.T) {
	var a awayMarks
	t0 := time.Unix(1000, 0)
	const within = 20 * time.Second
	if a.maybe(t0, within) {
		t.Fatal("held for before any sign")
	}
	for i := range 10 {
		if gap := a.ticked(t0.Add(time.Duration(i) * routeCheckEvery)); gap != 0 {
			t.Fatalf("tick %d: a stall of %v in steady runs", i, gap)
		}
	}
	last := t0.Add(9 * routeCheckEvery)
	if a.maybe(last.Add(routeCheckEvery), within) {
		t.Fatal("held for in steady runs")
	}
	// Paused: a release answer before the loop runs again sees the
	// stall under way.
	resumed := last.Add(8 * time.Second)
	if !a.maybe(resumed, within) {
		t.Fatal("a stall under way not seen")
	}
	if gap := a.ticked(resumed); gap != 8*time.Second {
		t.Fatalf("stall %v, want 8s", gap)
	}
	// The loop runs steadily after the resume.
	for at := resumed; at.Before(resumed.Add(within + 2*time.Second)); at = at.Add(routeCheckEvery) {
		a.ticked(at)
		if in := at.Sub(resumed) < within; a.maybe(at, within) != in {
			t.Fatalf("%v after the stall: held for %v, want %v", at.Sub(resumed), !in, in)
		}
	}
	var b awayMarks
	b.ticked(t0)
	b.lost(t0.Add(time.Second))
	b.ticked(t0.Add(time.Second))
	if !b.maybe(t0.Add(2*time.Second), within) {
		t.Fatal("a dropped peer not seen")
	}
}

// A node claims a clean publisher's forwarded QoS 2 message for the share
// groups the others hold for it should it die (heldForHere): those with a
// persistent member here, or a hold key (a restored member not settled
// yet); not a group of clean members only (claimServed).
func TestHeldForHere(t *testing.T) {
	n := &Node{local: newLocalInterest()}
	n.local.add(ikey{"t/#", "clean"})
	n.local.add(ikey{"t/#", "p"})
	n.local.add(persistShareKey("t/#", "p"))
	n.local.add(persistShareKey("t/#", "h").holdKey())
	groups := []string{"clean\x00t/#", "p\x00t/#", "h\x00t/#", "p\x00u/#"}
	members := []string{"c1", "p1", "h1", "p2"}
	if got, to := n.heldForHere(groups, members); !slices.Equal(got, []string{"p\x00t/#", "h\x00t/#"}) || !slices.Equal(to, []string{"p1", "h1"}) {
		t.Fatalf("heldForHere(%q, %q) = %q, %q, want the groups p and h, their members p1 and h1", groups, members, got, to)
	}
	n.local.remove(persistShareKey("t/#", "p"))
	if got, _ := n.heldForHere(groups, nil); !slices.Equal(got, []string{"h\x00t/#"}) {
		t.Fatalf("after the persistent member left: %q, want the hold key's group only", got)
	}
}

// A group claim found made is the reader's own when it names the member
// read for, or, for a follower, another member of the group here; never
// when it names a member elsewhere or a served copy (servedClaim).
func TestOwnClaim(t *testing.T) {
	for _, c := range []struct {
		by, member string
		others     []string
		want       bool
	}{
		{"a", "a", nil, true},                           // a read ahead's, or the turn's member
		{"a", "b", nil, false},                          // a read ahead for b: a's reader takes it
		{"a", "b", []string{"b", "a"}, true},            // a follower with a here (loss194)
		{"c", "b", []string{"b", "a"}, false},           // c is not here
		{servedClaim("a"), "a", []string{"a"}, false},   // a has its copy
		{servedClaim("a"), servedClaim("a"), nil, true}, // ClaimGroup's resend for a
		{"a", servedClaim("a"), nil, false},             // a's reader gives it the held copy
	} {
		if got := ownClaim(c.by, c.member, c.others); got != c.want {
			t.Errorf("ownClaim(%q, %q, %q) = %v, want %v", c.by, c.member, c.others, got, c.want)
		}
	}
}

// A kept copy's reader takes a served claim made for the session the copy
// is kept for as that session's own, and nothing else: a hold (no kept
// session), another member's served claim, or a read for another member
// leave it (keptServed; TestReproKeptServedCut).
func TestKeptServed(t *testing.T) {
	for _, c := range []struct {
		by, member, kept string
		want             bool
	}{
		{servedClaim("a"), "a", "a", true},  // a cut move's claimQueued for a
		{servedClaim("a"), "a", "", false},  // a hold: a has its copy elsewhere
		{servedClaim("b"), "a", "a", false}, // another member's copy
		{servedClaim("a"), "b", "a", false}, // not a read for the kept session
		{"a", "a", "a", false},              // a reader's claim: ownClaim's
	} {
		if got := keptServed(c.by, c.member, c.kept); got != c.want {
			t.Errorf("keptServed(%q, %q, %q) = %v, want %v", c.by, c.member, c.kept, got, c.want)
		}
	}
}

// holdSplit: a hold's plain copy and each of its groups go apart, under
// ids that name one content each, so that two holders of one message for
// one node naming different groups keep both (seed 260, session 24;
// TestReproHoldSameIDGroup).
func TestHoldSplitIDs(t *testing.T) {
	k := originKey{node: "n2", inc: "i", id: 42}
	type hold struct {
		groups []string
		only   bool
		id     string
	}
	split := func(groups []string, plain bool) []hold {
		var hs []hold
		fs, err := holdSplit(k, broker.Origin{}, "n3", groups, plain, func(gs []string, only bool, id string) (jetstream.PubAckFuture, error) {
			hs = append(hs, hold{gs, only, id})
			return &unansweredHold{}, nil
		})
		if err != nil || len(fs) != len(hs) {
			t.Fatalf("holdSplit: %d futures for %d appends, %v", len(fs), len(hs), err)
		}
		return hs
	}
	pub := split([]string{"g0\x00t/#", "g1\x00t/#"}, true) // the publisher's, for the node's keys
	here := split(nil, true)                               // the node's own, for a plain key
	if len(pub) != 3 || len(here) != 1 {
		t.Fatalf("appends: publisher %d, want 3; node %d, want 1", len(pub), len(here))
	}
	if pub[0].id != here[0].id || pub[0].only || len(pub[0].groups) != 0 || here[0].only {
		t.Errorf("plain copies: %+v and %+v, want one id, no group", pub[0], here[0])
	}
	if pub[1].id == pub[2].id || pub[1].id == pub[0].id || !pub[1].only || len(pub[1].groups) != 1 ||
		pub[1].id == goneGroupsMsgID(k, broker.Origin{}, "n3") {
		t.Errorf("group copies share an id or carry plain: %+v", pub)
	}
	if again := split([]string{"g1\x00t/#"}, false); again[0].id != pub[2].id {
		t.Errorf("the same group's hold by another holder: id %q, want %q (a repeat is dropped)", again[0].id, pub[2].id)
	}
}

// TestRestoredGateEnded: once a restored copy ended before the settle, a
// later session of its id is not a restored one (restoredGate.end).
func TestRestoredGateEnded(t *testing.T) {
	g := settledGate()
	g.restore([]string{"a", "b"})
	if !g.unsettled("a") || !g.unsettled("b") || g.unsettled("c") {
		t.Fatalf("restored a, b: unsettled a %v, b %v, c %v", g.unsettled("a"), g.unsettled("b"), g.unsettled("c"))
	}
	g.end("a")
	g.end("c") // never restored: nothing to note
	if g.unsettled("a") || !g.unsettled("b") || g.unsettled("c") {
		t.Fatalf("a's copy ended: unsettled a %v, b %v, c %v", g.unsettled("a"), g.unsettled("b"), g.unsettled("c"))
	}
	if len(g.ended) != 1 {
		t.Fatalf("ended %v, want a only", g.ended)
	}
	g.settle()
	if g.unsettled("b") {
		t.Fatal("b unsettled after the settle")
	}
}
