package cluster

import (
	"testing"
	"time"
)

// TestSilenceMarkMadeAt: an op appended after a silence counts from the
// last heartbeat before it, whether announceLoop found the silence yet or
// not, until a catch-up read begun after the return reached the end of
// the held subject (silence.go; TestReproReturnLateOp is the process
// test).
func TestSilenceMarkMadeAt(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	var m silenceMark
	if got := m.madeAt(at(0)); !got.Equal(at(0)) {
		t.Fatalf("before any heartbeat: made %v, want now", got)
	}
	m.beating(at(0))
	if got := m.madeAt(at(time.Second)); !got.Equal(at(time.Second)) {
		t.Fatalf("heartbeats on time: made %v, want now", got)
	}
	// Paused 10 s: an op appended before announceLoop runs.
	if got := m.madeAt(at(10 * time.Second)); !got.Equal(at(0)) {
		t.Fatalf("silence under way: made %v, want the last heartbeat %v", got, at(0))
	}
	// announceLoop finds it (catchUpOnReturn), then beats again.
	m.begin(at(0), at(10*time.Second))
	m.beating(at(10 * time.Second))
	if got := m.madeAt(at(11 * time.Second)); !got.Equal(at(0)) {
		t.Fatalf("catch-up running: made %v, want the silence's start %v", got, at(0))
	}
	// A read that began before the return does not end it.
	m.caughtUp(at(9 * time.Second))
	if got := m.madeAt(at(11 * time.Second)); !got.Equal(at(0)) {
		t.Fatalf("read begun before the return: made %v, want the silence's start", got)
	}
	// A second silence before the first was caught up with keeps the
	// first's start.
	if got := m.madeAt(at(20 * time.Second)); !got.Equal(at(0)) {
		t.Fatalf("second silence under way: made %v, want the first's start", got)
	}
	m.begin(at(12*time.Second), at(20*time.Second))
	m.beating(at(20 * time.Second))
	m.caughtUp(at(15 * time.Second))
	if got := m.madeAt(at(21 * time.Second)); !got.Equal(at(0)) {
		t.Fatalf("second silence: made %v, want the first's start", got)
	}
	m.caughtUp(at(20 * time.Second))
	if got := m.madeAt(at(21 * time.Second)); !got.Equal(at(21 * time.Second)) {
		t.Fatalf("caught up: made %v, want now", got)
	}
}
