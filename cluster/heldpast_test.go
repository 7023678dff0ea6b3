package cluster

import (
	"errors"
	"slices"
	"testing"
	"time"
)

// TestHeldFollowerReadsPastItsWatch: a session stays with its follower
// past its watch's end until a read begun since is complete. Before, the
// first tick past the end dropped it, whatever the reads had reached: a
// read that began within the watch failed on a claim (errClaim, "read
// again from here") some 45 s past the end, the follower ended, and the
// last four messages a disowned copy kept for the session were read by
// nobody
// (TestReproKeptServedCut at load 120, bench/jepsen/RESULTS.md "ks33").
func TestHeldFollowerReadsPastItsWatch(t *testing.T) {
	end := time.Unix(1000, 0)
	in := func(p followPass, id string) bool { return slices.Contains(p.ids, id) }

	t.Run("a read that failed past the end, then one complete", func(t *testing.T) {
		f := &heldFollower{ids: map[string]time.Time{}, from: 132, since: end.Add(-time.Minute)}
		f.join("a", end, 132, end.Add(-time.Minute), false, true, nil)
		// Begun within the watch, the read ends in a failed claim after
		// it, at the message that failed (255).
		p := f.pass(end.Add(-time.Second))
		if !in(p, "a") || len(p.over) != 0 {
			t.Fatalf("within the watch: ids %v, over %v", p.ids, p.over)
		}
		if _, left := f.passDone(p, 255, errClaim); len(left) != 0 {
			t.Fatalf("left after a failed read: %v", left)
		}
		if f.from != 255 {
			t.Fatalf("from %d after the failed claim, want 255 (read again from there)", f.from)
		}
		// Past the end: read for again, from there.
		p = f.pass(end.Add(time.Second))
		if !in(p, "a") {
			t.Fatal("the session left its follower at its watch's end with its last read failed: what lies from 255 on is read by nobody")
		}
		if p.from != 255 || !p.over["a"].Equal(end) {
			t.Fatalf("past the end: from %d, over %v; want 255 and a by its end", p.from, p.over)
		}
		if _, left := f.passDone(p, 255, errors.New("no quorum")); len(left) != 0 {
			t.Fatalf("left after a failed read past the end: %v", left)
		}
		p = f.pass(end.Add(3 * time.Second))
		_, left := f.passDone(p, 259, nil)
		if left["a"] != 3*time.Second {
			t.Fatalf("left %v after a complete read begun past the end, want a 3s past", left)
		}
		if p = f.pass(end.Add(4 * time.Second)); len(p.ids) != 0 {
			t.Fatalf("ids %v after the session left", p.ids)
		}
	})

	t.Run("a complete read begun before the end", func(t *testing.T) {
		f := &heldFollower{ids: map[string]time.Time{}}
		f.join("a", end, 10, end.Add(-time.Minute), false, true, nil)
		// Complete, but begun within the watch: what was held between
		// its start and the end is for the next read.
		if _, left := f.passDone(f.pass(end.Add(-time.Millisecond)), 20, nil); len(left) != 0 {
			t.Fatalf("left after a read begun within the watch: %v", left)
		}
		p := f.pass(end.Add(time.Millisecond))
		if !in(p, "a") {
			t.Fatal("dropped at the end without a complete read begun after it")
		}
		if _, left := f.passDone(p, 20, nil); len(left) != 1 {
			t.Fatalf("left %v, want a", left)
		}
	})

	t.Run("joined again during the read", func(t *testing.T) {
		f := &heldFollower{ids: map[string]time.Time{}}
		f.join("a", end, 10, end.Add(-time.Minute), false, true, nil)
		f.join("b", end.Add(time.Minute), 10, end.Add(-time.Minute), false, false, nil)
		p := f.pass(end.Add(time.Second))
		f.join("a", end.Add(time.Minute), 10, end, false, false, nil) // a new watch
		if _, left := f.passDone(p, 20, nil); len(left) != 0 {
			t.Fatalf("left %v: a joined again with a new watch during the read", left)
		}
		if p = f.pass(end.Add(2 * time.Second)); !in(p, "a") || !in(p, "b") || len(p.over) != 0 {
			t.Fatalf("after: ids %v over %v, want a and b, none over", p.ids, p.over)
		}
	})

	t.Run("a follower kept from reading by a test fault", func(t *testing.T) {
		f := &heldFollower{ids: map[string]time.Time{}}
		f.join("a", end, 10, end.Add(-time.Minute), false, true, nil)
		f.join("b", end.Add(time.Minute), 10, end.Add(-time.Minute), false, false, nil)
		f.endStalled(f.pass(end.Add(time.Second)))
		if p := f.pass(end.Add(2 * time.Second)); !slices.Equal(p.ids, []string{"b"}) {
			t.Fatalf("ids %v, want b: a stalled follower's sessions end with their watch", p.ids)
		}
	})
}
