package cluster

import (
	"testing"

	"time"
)

// TestHeldWaitFollower: a session whose first held read failed keeps its
// release requests waiting (awaitHeld) until its follower read the
// subject again from a reset at or after its own, not on an earlier
// read, and a follower that ends lets them go.
func TestHeldWaitFollower(t *testing.T) {
	o := &owners{}
	w := newHeldWait(o.holdRelease([]string{"a"}))
	pending := func() bool {
		o.mu.Lock()
		defer o.mu.Unlock()
		return o.heldPending["a"] != nil
	}
	f := &heldFollower{ids: map[string]time.Time{}, gen: 3}
	// The session's first read failed: the follower resets (gen 4).
	f.gen++
	w.add()
	f.waits = map[*heldWait]uint64{w: f.gen}
	w.finish() // the adoption itself is done
	if !pending() {
		t.Fatal("mark cleared before the follower read the subject again")
	}
	finishAll(f.takeWaits(3)) // a read begun before the reset
	if !pending() {
		t.Fatal("mark cleared by a read begun before the session's reset")
	}
	finishAll(f.takeWaits(4))
	if pending() {
		t.Fatal("mark kept after the follower's read from the reset")
	}
	if len(f.waits) != 0 {
		t.Fatalf("waits left: %d", len(f.waits))
	}

	// A follower that ends (its watches over) lets its waits go.
	w2 := newHeldWait(o.holdRelease([]string{"a"}))
	w2.add()
	f.waits[w2] = 9
	w2.finish()
	finishAll(f.takeWaits(^uint64(0)))
	if pending() {
		t.Fatal("mark kept after the follower ended")
	}
}
