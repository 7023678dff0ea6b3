package cluster

import (
	"testing"
	"time"
)

// TestOpHeldHeader: a pack names the earliest place of its ops (the
// follower's place only grows, so that is its oldest op's), the header
// reads back as written, and a missing or unreadable one is no place (the
// held subjects are read by time, as before).
func TestOpHeldHeader(t *testing.T) {
	if got := packHeld([]repOp{{held: 0}, {held: 9}, {held: 7}, {held: 0}}); got != 7 {
		t.Errorf("packHeld = %d, want 7", got)
	}
	if got := packHeld([]repOp{{}, {}}); got != 0 {
		t.Errorf("packHeld of ops made outside the window = %d, want 0", got)
	}
	if got := parseOpHeld(formatOpHeld("n1", 407)); got != (heldBehind{node: "n1", from: 407}) {
		t.Errorf("round trip = %+v", got)
	}
	for _, v := range []string{"", "407", "407 ", "x n1", "-1 n1"} {
		if got := parseOpHeld(v); got != (heldBehind{}) {
			t.Errorf("parseOpHeld(%q) = %+v, want none", v, got)
		}
	}
}

// TestOwnHeldFrom: every op names where this node's own held follower
// stands, not only one made while the others may have held for this node
// lately (a node back from a silence): they hold for a live node too (its
// hold keys), and a node killed before its follower applied such a hold
// had made a later op of the session (test/jepsen TestClusterFull long
// faults, seed 1132; TestReproOpHeldKilled). Not an op that counts as made
// earlier than it was (madeCap, a silence's start), outside that window:
// its time bounds what the session's own reads have still to give it. A
// follower that never began here names nothing (read by time).
func TestOwnHeldFrom(t *testing.T) {
	now := time.Date(2026, 12, 7, 15, 29, 34, 567_000_000, time.UTC)
	s := &sessions{}
	if got := s.ownHeldFrom(now, now, false); got != 0 {
		t.Fatalf("follower never began: place %d, want 0", got)
	}
	s.gate.next.Store(127)
	for _, c := range []struct {
		name string
		made time.Time
		away bool
		want uint64
	}{
		{"live, made now", now, false, 127},
		{"back from a silence, made now", now, true, 127},
		{"capped (a catch-up's reads not done)", now.Add(-time.Second), false, 0},
		{"capped, back from a silence", now.Add(-time.Second), true, 127},
	} {
		if got := s.ownHeldFrom(now, c.made, c.away); got != c.want {
			t.Errorf("%s: place %d, want %d", c.name, got, c.want)
		}
	}
}
