package cluster

import (
	"testing"
	"time"
)

// TestMadeCap: while a session moved here live reads on from its old
// owner's places, its ops count as made no later than the earliest place
// read by time, and as made when appended once the cap is lifted or past
// its bound (sessions.go, "A session moved here whose held reads are not
// done"; TestReproHandedReadLate).
func TestMadeCap(t *testing.T) {
	base := time.Date(2026, 12, 6, 15, 18, 34, 710_000_000, time.UTC)
	places := []heldPos{
		{node: "n1", from: 40}, // a sequence alone: no time
		{node: "n2", from: 12, since: base.Add(-time.Hour), floor: base.Add(time.Second)}, // its follower's since is not the place
		{node: "n3", since: base, floor: base},                                            // by time (keptBy)
	}
	if got := handedFloor(places); !got.Equal(base) {
		t.Fatalf("handedFloor = %v, want %v", got, base)
	}
	if got := handedFloor(places[:1]); !got.IsZero() {
		t.Fatalf("handedFloor of a sequence place = %v, want zero", got)
	}
	// A named place read for a keep no move carried (keptUncarried).
	kept := heldPos{node: "n1", from: 40, keptFrom: base.Add(-time.Minute)}
	if got := handedFloor(append(places, kept)); !got.Equal(kept.keptFrom) {
		t.Fatalf("handedFloor with a named place read for kept copies = %v, want %v", got, kept.keptFrom)
	}

	s := &sessions{}
	now := base.Add(2 * time.Second)
	s.capMade("ps3", time.Time{}, now.Add(time.Second)) // no time: no cap
	if got := s.madeAt("ps3", now); !got.Equal(now) {
		t.Fatalf("without a cap: made %v, want %v", got, now)
	}
	s.capMade("ps3", base, now.Add(time.Second))
	if got := s.madeAt("ps3", now); !got.Equal(base) {
		t.Fatalf("capped: made %v, want %v", got, base)
	}
	if got := s.madeAt("ps1", now); !got.Equal(now) {
		t.Fatalf("another id: made %v, want %v", got, now)
	}
	if got := s.madeAt("ps3", base.Add(-time.Second)); !got.Equal(base.Add(-time.Second)) {
		t.Fatalf("made before the cap: %v, want its own time", got)
	}
	later := now.Add(2 * time.Second)
	if got := s.madeAt("ps3", later); !got.Equal(later) {
		t.Fatalf("past the cap's bound: made %v, want %v", got, later)
	}
	s.capMade("ps3", base, later.Add(time.Second))
	s.uncapMade("ps3")
	if got := s.madeAt("ps3", later); !got.Equal(later) {
		t.Fatalf("uncapped: made %v, want %v", got, later)
	}
}

// TestCatchUpCap: a session taken from the stream has its ops made no
// later than the earliest place its catch-up's reads still have to read
// from (catchUpCap; TestReproCatchUpKilled), and the end of those reads
// lifts that cap only, not a later adoption's.
func TestCatchUpCap(t *testing.T) {
	base := time.Date(2026, 12, 7, 4, 38, 58, 718_000_000, time.UTC)
	reads := []heldRead{
		{node: "n2", next: 155, unreadAt: base.Add(-time.Second)},            // read to its end: from its start on
		{node: "n1", unreadAt: base.Add(-9 * time.Second), err: errNotReady}, // failed: by time from the last op
		{node: "n3", next: 197, unreadAt: base.Add(-time.Second)},
	}
	if got := catchUpCap(reads); !got.Equal(base.Add(-9 * time.Second)) {
		t.Fatalf("catchUpCap = %v, want the failed read's start %v", got, base.Add(-9*time.Second))
	}
	if got := catchUpCap(nil); !got.IsZero() {
		t.Fatalf("catchUpCap of no reads = %v, want zero (no cap)", got)
	}

	s := &sessions{}
	first, second := base.Add(-9*time.Second), base.Add(time.Second)
	s.capMade("ps1", first, base.Add(time.Minute))
	s.capMade("ps1", second, base.Add(time.Minute)) // a later adoption here
	s.uncapMadeAt("ps1", first)                     // the first one's reads end
	if got := s.madeAt("ps1", base.Add(2*time.Second)); !got.Equal(second) {
		t.Fatalf("after the earlier adoption's reads ended: made %v, want the later cap %v", got, second)
	}
	s.uncapMadeAt("ps1", second)
	if now := base.Add(3 * time.Second); !s.madeAt("ps1", now).Equal(now) {
		t.Fatalf("after its own reads ended: made %v, want %v", s.madeAt("ps1", now), now)
	}
}
