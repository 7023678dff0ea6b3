package cluster

import (
	"testing"
	"time"
)

func TestLastBeat(t *testing.T) {
	dir := t.TempDir()
	if _, ok := lastBeat(dir); ok {
		t.Fatal("a new node's data directory has a last heartbeat")
	}
	first := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := noteBeat(dir, first); err != nil {
		t.Fatal(err)
	}
	if at, ok := lastBeat(dir); !ok || !at.Equal(first) {
		t.Fatalf("last heartbeat %v, %v; want %v", at, ok, first)
	}
	// Moved at each heartbeat, not only when the file is made.
	next := first.Add(time.Minute)
	if err := noteBeat(dir, next); err != nil {
		t.Fatal(err)
	}
	if at, ok := lastBeat(dir); !ok || !at.Equal(next) {
		t.Fatalf("last heartbeat %v, %v; want %v", at, ok, next)
	}
	if err := noteBeat(dir+"/missing", next); err == nil {
		t.Fatal("noted a heartbeat in a directory that does not exist")
	}
}

// A restarted node's ops count from its last heartbeat until the settle's
// catch-up read what was held for it (lastbeat.go, silence.go).
func TestRestartedOpsMadeAtLastBeat(t *testing.T) {
	var m silenceMark
	beat := time.Now().Add(-10 * time.Second)
	start := time.Now()
	m.begin(beat, start)
	if got := m.madeAt(time.Now()); !got.Equal(beat) {
		t.Fatalf("an op before the settle's read counts at %v, want the last heartbeat %v", got, beat)
	}
	m.caughtUp(start.Add(time.Millisecond))
	now := time.Now()
	if got := m.madeAt(now); !got.Equal(now) {
		t.Fatalf("an op after the settle's read counts at %v, want %v", got, now)
	}
}
