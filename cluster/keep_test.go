package cluster

import (
	"bytes"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/roost-mqtt/roost/broker"
)

// A kept copy is its message's forwarded form naming the share groups its
// session got it for (none: a plain subscription), everything else as
// forwarded: Origin, expiry, flags, the PUBLISH. A malformed form is
// refused.
func TestForwardWithGroups(t *testing.T) {
	m := &broker.Message{Topic: "a/b", Payload: []byte("pay"), QoS: 2, Retain: true, From: "me"}
	m.SetExpires(time.Now().Add(time.Minute))
	pub, err := encodePublish(m)
	if err != nil {
		t.Fatal(err)
	}
	o := broker.Origin{ClientID: "p", PacketID: 7, Nonce: 99}
	for _, groups := range [][]string{nil, {"g\x00a/#"}, {"g\x00a/#", "h\x00a/b"}} {
		fwd := encodeForwardOrigin(m, groups, pub, o)
		for _, keep := range [][]string{nil, {"h\x00a/b"}, {"k\x00a/+", "g\x00a/#"}} {
			form, err := forwardWithGroups(fwd, keep, false)
			if err != nil {
				t.Fatalf("groups %q, kept for %q: %v", groups, keep, err)
			}
			if len(groups) == 0 && len(keep) == 0 && !bytes.Equal(form, fwd) {
				t.Errorf("a form without groups, kept for none, was rewritten")
			}
			rm, err := decodeForward(form)
			if err != nil {
				t.Fatalf("groups %q, kept for %q: %v", groups, keep, err)
			}
			if !slices.Equal(rm.Groups, keep) && !(len(rm.Groups) == 0 && len(keep) == 0) || rm.Origin != o || rm.Topic != "a/b" ||
				string(rm.Payload) != "pay" || rm.QoS != 2 || !rm.Retain || rm.From != "me" || rm.ExpiresIn <= 0 {
				t.Errorf("groups %q, kept for %q: decoded %+v", groups, keep, rm)
			}
		}
		for i := range len(fwd) {
			if b, err := forwardWithGroups(fwd[:i], []string{"g\x00a/#"}, false); err == nil {
				if _, err := decodeForward(b); err == nil {
					t.Fatalf("groups %q: a form cut at %d bytes passed", groups, i)
				}
			}
		}
	}
}

// A hold for share groups only (no plain subscription owed it: hold,
// holdHere) says so in its form, and what it keeps of the forward stays:
// its follower must not give it to a plain subscriber (a session that
// moved there since had it already; bench/jepsen/RESULTS.md, session 16).
func TestForwardWithGroupsOnly(t *testing.T) {
	m := &broker.Message{Topic: "a/b", Payload: []byte("pay"), QoS: 2, From: "me"}
	pub, err := encodePublish(m)
	if err != nil {
		t.Fatal(err)
	}
	o := broker.Origin{ClientID: "p", PacketID: 7, Nonce: 99}
	for _, fwd := range [][]byte{encodeForwardOrigin(m, nil, pub, o), encodeForwardOrigin(m, []string{"g\x00a/#"}, pub, broker.Origin{})} {
		for _, only := range []bool{false, true} {
			form, err := forwardWithGroups(fwd, []string{"h\x00a/+"}, only)
			if err != nil {
				t.Fatal(err)
			}
			rm, err := decodeForward(form)
			if err != nil {
				t.Fatal(err)
			}
			if rm.GroupsOnly != only || !slices.Equal(rm.Groups, []string{"h\x00a/+"}) || string(rm.Payload) != "pay" || rm.QoS != 2 || rm.From != "me" {
				t.Errorf("groups only %v: decoded %+v", only, rm)
			}
		}
	}
	// As the publisher holds it (hold): its groups, only them.
	k := originKey{"n1", "i", 5}
	_, rm, err := decodeHeld(encodeHeld(k, encodeForwardFlags(m, []string{"g\x00a/#"}, pub, o, flagGroupsOnly)))
	if err != nil || !rm.GroupsOnly || rm.Origin != o {
		t.Errorf("held for groups only: %+v, %v", rm, err)
	}
}

// withAway merges the share groups the broker gave to disowned copies
// into the copies a message reached: one entry per session, each group
// once.
func TestWithAway(t *testing.T) {
	ks := withAway([]keptCopy{{id: "a"}}, []broker.AwayMember{
		{ClientID: "a", Group: "g\x00t"}, {ClientID: "b", Group: "g\x00t"}, {ClientID: "a", Group: "h\x00t"}, {ClientID: "a", Group: "g\x00t"}})
	if len(ks) != 2 || ks[0].id != "a" || !slices.Equal(ks[0].groups, []string{"g\x00t", "h\x00t"}) ||
		ks[1].id != "b" || !slices.Equal(ks[1].groups, []string{"g\x00t"}) {
		t.Errorf("merged %+v", ks)
	}
	if ks := withAway(nil, nil); ks != nil {
		t.Errorf("nothing merged into nothing gave %+v", ks)
	}
	// A plain subscription's entry (Group "") names no group.
	ks = withAway(nil, []broker.AwayMember{{ClientID: "p"}, {ClientID: "q", Group: "g\x00t"}, {ClientID: "q"}})
	if len(ks) != 2 || ks[0].id != "p" || len(ks[0].groups) != 0 || ks[1].id != "q" || !slices.Equal(ks[1].groups, []string{"g\x00t"}) {
		t.Errorf("plain entries merged as %+v", ks)
	}
}

// The set of disowned copies: added at the disown, gone when the copy
// ends (OpSessionDel, lost or not) or its client resumes it here (an
// OpSessionPut once no longer lost), not by the copy's own puts while
// lost.
func TestKeptCopies(t *testing.T) {
	s := &sessions{}
	if s.kept.has("a") {
		t.Fatal("empty set has members")
	}
	s.kept.set("a", true)
	s.kept.set("b", true)
	s.keepOp(&broker.Op{Kind: broker.OpSessionPut, ClientID: "a"}, true)
	if !s.kept.has("a") {
		t.Fatal("a lost copy's own OpSessionPut took it out")
	}
	s.keepOp(&broker.Op{Kind: broker.OpSessionPut, ClientID: "a"}, false)
	s.keepOp(&broker.Op{Kind: broker.OpSessionDel, ClientID: "b"}, true)
	if s.kept.has("a") || s.kept.has("b") {
		t.Errorf("a in the set after its resume: %v; b after its end: %v", s.kept.has("a"), s.kept.has("b"))
	}
	s.kept.set("c", true)
	s.kept.count("c")
	s.kept.count("c")
	s.kept.count("d") // not in the set: not counted, not added
	if n := s.kept.set("c", false); n != 2 || s.kept.has("d") {
		t.Errorf("c's count %d, want 2; d in the set: %v", n, s.kept.has("d"))
	}
}

// A held message marked for a session (keep) is offered to that session
// only; an unmarked one to whoever the reader offers it to.
func TestOnlyFor(t *testing.T) {
	all := func(string) bool { return true }
	marked := heldMsg{h: nats.Header{heldForHeader: []string{"x"}}}
	ids := onlyFor(marked, all)
	if !ids("x") || ids("y") {
		t.Errorf("marked for x: x %v y %v", ids("x"), ids("y"))
	}
	if heldFor(heldMsg{}) != "" || !onlyFor(heldMsg{}, all)("y") {
		t.Error("an unmarked held message was narrowed")
	}
	if keptMsgID(originKey{"n1", "i", 5}, broker.Origin{}, "x") == keptMsgID(originKey{"n1", "i", 5}, broker.Origin{}, "y") {
		t.Error("two sessions' kept copies of one message share a message id: the second would be dropped")
	}
}

// heldMsg is a jetstream.Msg with headers only.
type heldMsg struct {
	jetstream.Msg
	h nats.Header
}

func (m heldMsg) Headers() nats.Header { return m.h }

// followOwnHeld gives a held message to the persistent sessions that were
// here when it was held, a disowned copy (keep.go) too: a live move of
// the copy carries what it took, and reads no held subject. A disowned
// copy is marked away: a share group's message goes to it only when the
// group has no other member here (claimGroups).
func TestOwnHeldTo(t *testing.T) {
	s := &sessions{}
	s.kept.set("copy", true)
	at := time.Now()
	in := map[string]bool{"copy": true, "live": true, "late": true}
	arrived := map[string]time.Time{"late": at.Add(time.Second)}
	to, away := s.ownHeldTo(in, arrived, at)
	for id, want := range map[string][2]bool{"copy": {true, true}, "live": {true, false}, "late": {false, false}, "clean": {false, false}} {
		if got := [2]bool{to(id), away(id)}; got != want {
			t.Errorf("%s: to, away = %v, want %v", id, got, want)
		}
	}
	s.kept.set("copy", false) // its client resumed it here
	if !to("copy") || away("copy") {
		t.Error("a copy no longer disowned is still taken for one")
	}
}

// A live move of a session onto a node whose copy of it, disowned there
// (fenced) since the node's last claim, kept messages that nothing
// carried to the session reads them back from the loss (keptUnread):
// with the copy still there or ended, not once its client resumed it
// here or its session moved out live with them, and once only.
func TestKeptUnread(t *testing.T) {
	newS := func() *sessions {
		return &sessions{n: &Node{cfg: Config{Node: "n3"}, log: slog.New(slog.DiscardHandler)},
			lost: map[string]time.Time{}, adopting: map[string]bool{}, epochs: map[string]uint64{}, took: map[string]uint64{}}
	}
	self := func(ps []heldPos) (heldPos, bool) {
		for _, p := range ps {
			if p.node == "n3" {
				return p, true
			}
		}
		return heldPos{}, false
	}
	s := newS()
	s.disown("a")
	lost := s.lostFrom["a"].at
	if _, ok := self(s.takeHeldBack("a", nil)); ok {
		t.Fatal("a copy that kept nothing: its node's held subject read for the move")
	}
	s.kept.count("a")
	p, ok := self(s.takeHeldBack("a", nil))
	if !ok || !p.floor.Equal(lost) || !p.since.Equal(lost.Add(-heldBackMargin)) {
		t.Fatalf("a copy still here that kept a message: place %+v (found %v), want from the loss %v", p, ok, lost)
	}
	s.disown("a") // a newer claim elsewhere: the keep goes on from the first loss
	s.keepOp(&broker.Op{Kind: broker.OpSessionDel, ClientID: "a"}, true)
	if p, ok := self(s.takeHeldBack("a", []heldPos{{node: "n1"}})); !ok || !p.floor.Equal(lost) {
		t.Fatalf("a copy ended with kept messages: place %+v (found %v), want from the first loss %v", p, ok, lost)
	}
	if _, ok := self(s.takeHeldBack("a", nil)); ok {
		t.Error("an ended copy's kept messages read for a second move")
	}

	for _, tt := range []struct {
		name string
		end  func(s *sessions)
	}{
		{"moved out", func(s *sessions) { s.unkeep("b") }},
		{"resumed here", func(s *sessions) {
			s.keepOp(&broker.Op{Kind: broker.OpSessionPut, ClientID: "b"}, false)
		}},
	} {
		s := newS()
		s.disown("b")
		s.kept.count("b")
		tt.end(s)
		if _, ok := self(s.takeHeldBack("b", nil)); ok {
			t.Errorf("%s: what the copy kept read again for a move back", tt.name)
		}
	}
	s = newS()
	s.disown("c")
	s.kept.count("c")
	if ps := s.takeHeldBack("c", []heldPos{{node: "n3", from: 7}}); len(ps) != 1 || ps[0].from != 7 {
		t.Errorf("places %+v, want the old owner's place for n3 alone", ps)
	}

	// A claim back here that did not adopt (it waited for its previous
	// owner, then a newer claim elsewhere) reads nothing: the keep goes
	// on from the first loss, under the claim's epoch (markLostLocked;
	// seed 1114: the move in read from the second loss, 6 lost).
	for _, tt := range []struct {
		name string
		end  func(s *sessions) // the copy, before the second loss
	}{
		{"copy still here", func(*sessions) {}},
		{"copy ended", func(s *sessions) { s.keepOp(&broker.Op{Kind: broker.OpSessionDel, ClientID: "d"}, true) }},
	} {
		s := newS()
		s.setEpoch("d", 3, false)
		s.disown("d")
		first := s.lostFrom["d"]
		s.kept.count("d")
		s.setEpoch("d", 5, true) // the claim back, never adopted
		s.kept.count("d")        // kept while it waits
		tt.end(s)
		time.Sleep(time.Millisecond)
		s.disown("d")
		if m := s.lostFrom["d"]; !m.at.Equal(first.at) || m.epoch != 5 {
			t.Errorf("%s: mark after the second loss %+v, want the first loss %v at the claim back's epoch 5", tt.name, m, first.at)
		}
		if s.keptSince("d", 5).IsZero() {
			t.Errorf("%s: a record ending at the claim back's epoch reads no kept copies", tt.name)
		}
		if p, ok := self(s.takeHeldBack("d", nil)); !ok || !p.floor.Equal(first.at) {
			t.Errorf("%s: move in after the second loss: place %+v (found %v), want from the first loss %v", tt.name, p, ok, first.at)
		}
	}
	// Read (the client resumed the copy here): the next loss is stamped
	// anew.
	s = newS()
	s.disown("e")
	first := s.lostFrom["e"].at
	s.kept.count("e")
	s.setEpoch("e", 2, true)
	s.keepOp(&broker.Op{Kind: broker.OpSessionPut, ClientID: "e"}, false)
	time.Sleep(time.Millisecond)
	s.disown("e")
	if at := s.lostFrom["e"].at; !at.After(first) {
		t.Errorf("a loss after the keep was read: mark %v, want the new loss after %v", at, first)
	}
}

// TestKeptKeys: a node announces a kept key while its fenced copy's kept
// messages are unread (announceKeptLocked), not for a copy that a live
// move out carries, and takes it back once a
// move back here read them; another node that has the key reads the
// copy node's held subject from the loss when a session moves onto it
// live (keptElsewhere), not a node the old owner named a place of nor
// the old owner itself, and
// no kept key reaches the routing tree.
func TestKeptKeys(t *testing.T) {
	local := newLocalInterest()
	s3 := &sessions{n: &Node{cfg: Config{Node: "n3"}, log: slog.New(slog.DiscardHandler)},
		lost: map[string]time.Time{}, adopting: map[string]bool{}, persist: newPersistentFilters(local)}
	s3.disown("a")
	lost := s3.lostFrom["a"].at
	keys, _ := local.snapshot()
	if slices.ContainsFunc(keys, ikey.isKept) {
		t.Fatalf("keys %q: a kept key before anything was kept", keys)
	}
	s3.kept.count("a")
	s3.announceKept("a")
	if local.has(keptKey("a", lost)) {
		t.Fatal("a kept key for a copy not fenced: a live move out carries what it keeps")
	}
	s3.fencedKeep("a")
	if !local.has(keptKey("a", lost)) {
		t.Fatal("a fenced copy that kept a message: no kept key from the loss")
	}
	s3.keepOp(&broker.Op{Kind: broker.OpSessionDel, ClientID: "a"}, true)
	if !local.has(keptKey("a", lost)) {
		t.Fatal("the copy ended with its kept messages unread: kept key gone")
	}

	r := newRemoteInterest()
	keys, _ = local.snapshot()
	r.applySnapshotFor(t, "n3", keys, time.Now())
	if got := nodesFor(r, "a"); len(got) != 0 {
		t.Errorf("a kept key routes topic a to %v", got)
	}
	s1 := &sessions{n: &Node{cfg: Config{Node: "n1"}, log: slog.New(slog.DiscardHandler), remote: r}}
	ps := s1.keptElsewhere("n2", "a", []heldPos{{node: "n2", from: 4}})
	want := heldPos{node: "n3", since: lost.Add(-heldBackMargin), floor: lost}
	if len(ps) != 2 || ps[1].node != want.node || !ps[1].since.Equal(want.since) || !ps[1].floor.Equal(want.floor) {
		t.Fatalf("places %+v, want the old owner's and %+v", ps, want)
	}
	if ps := s1.keptElsewhere("n2", "a", []heldPos{{node: "n3", from: 9}}); len(ps) != 1 || ps[0].from != 9 {
		t.Errorf("places %+v, want the old owner's place for n3 alone", ps)
	}
	if ps := s1.keptElsewhere("n3", "a", nil); len(ps) != 0 {
		t.Errorf("places %+v: the old owner's kept key read for its own move", ps)
	}
	if ps := s1.keptElsewhere("n2", "b", nil); len(ps) != 0 {
		t.Errorf("places %+v for a session nobody kept for", ps)
	}

	s3.takeHeldBack("a", nil) // the session moved back onto n3: read there
	if local.has(keptKey("a", lost)) {
		t.Error("kept key still out after a move back here read what the copy kept")
	}
	keys, _ = local.snapshot()
	r.applySnapshot("n3", "inc", 2, keys, true)
	if ps := s1.keptElsewhere("n2", "a", nil); len(ps) != 0 {
		t.Errorf("places %+v after n3 took its kept key back", ps)
	}
}

// TestOriginWatchClaimBack: a live move that brings a session back onto
// the node whose disowned copy took forwards reads their kept copies
// (takeHeldBack), and the watch the copy noted them in does not take them
// for had; what the session got before the disown still counts (test/jepsen
// TestClusterFull long faults, seed 1146, session 30: ps1 lost the three
// messages n1's copy took from n2 between its disown and n1's claim back,
// left out as got).
func TestOriginWatchClaimBack(t *testing.T) {
	n := &Node{cfg: Config{Node: "n1"}, log: slog.New(slog.DiscardHandler)}
	s := &sessions{n: n, lost: map[string]time.Time{}, adopting: map[string]bool{}}
	n.sess = s
	n.watch.self = originKey{node: "n1", inc: "i1"}
	n.watch.watch("ps1", time.Now().Add(time.Minute)) // moved in live: beginHanded watches it
	before := originKey{node: "n2", inc: "i2", id: 1}
	during := originKey{node: "n2", inc: "i2", id: 2}
	if !n.dedupPick(before, nil)("ps1") {
		t.Fatal("a forward to the live session refused")
	}
	s.disown("ps1") // n2's claim: the copy here is disowned
	if !n.dedupPick(during, nil)("ps1") {
		t.Fatal("a forward to the disowned copy refused")
	}
	s.kept.count("ps1") // and kept for its session (keep)
	s.holdBack("ps1")   // n2's move's finish declined: claimed back here
	handed := s.takeHeldBack("ps1", nil)
	if !slices.ContainsFunc(handed, func(p heldPos) bool { return p.node == "n1" }) {
		t.Fatalf("places %+v: the claim back does not read this node's subject", handed)
	}
	if !n.dedupPickHeld(during, nil, "ps1")("ps1") {
		t.Error("the kept copy of a forward the disowned copy took left out as got after the claim back")
	}
	if n.dedupPickHeld(during, nil, "")("ps1") {
		t.Error("a hold of the same message delivered too")
	}
	if n.dedupPickHeld(before, nil, "")("ps1") {
		t.Error("a held copy of a message the session got before its disown delivered again")
	}
}
