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
