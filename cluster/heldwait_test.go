package cluster

import (
	"slices"
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

// TestHeldWaitUnreadFrom: a wait names the nodes whose followers have not
// read for it yet (the catch-up's log at its bound), each once however
// many sessions joined it, and forgets one once its follower read.
func TestHeldWaitUnreadFrom(t *testing.T) {
	done := false
	w := newHeldWait(func() { done = true })
	n1 := &heldFollower{node: "n1", ids: map[string]time.Time{}}
	n3 := &heldFollower{node: "n3", ids: map[string]time.Time{}}
	until := time.Now().Add(time.Minute)
	n1.join("a", until, 0, time.Time{}, false, true, w)
	n1.join("b", until, 0, time.Time{}, false, false, w)
	n3.join("a", until, 0, time.Time{}, false, true, w)
	w.finish() // the adoption's own share
	if got := w.unreadFrom(); !slices.Equal(got, []string{"n1", "n3"}) {
		t.Fatalf("unread from %v, want [n1 n3]", got)
	}
	finishAll(n3.takeWaits(^uint64(0)))
	if got := w.unreadFrom(); !slices.Equal(got, []string{"n1"}) || done {
		t.Fatalf("after n3's read: unread from %v (done %v), want [n1], not done", got, done)
	}
	finishAll(n1.takeWaits(^uint64(0)))
	if got := w.unreadFrom(); len(got) != 0 || !done {
		t.Fatalf("after n1's read: unread from %v (done %v), want none, done", got, done)
	}
}
