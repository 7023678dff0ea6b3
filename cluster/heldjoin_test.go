package cluster

import (
	"testing"
	"time"
)

// A session joining a follower that another session's adoption started
// gets what was held after its own first read ended: the follower reads
// again from there at the latest, and a read in flight without it (its
// gen) does not move the follower past it. Before, the follower went on
// from its own position (TestClusterTransports/NodeKill: a will's session
// adopted by the janitor had its follower at 277, a resumed session's
// read ahead ended at 264; 4 acknowledged messages lost).
func TestHeldFollowerJoinReadsFromTheJoinersEnd(t *testing.T) {
	last := time.Unix(1000, 0)
	until := last.Add(time.Minute)
	cases := []struct {
		name      string
		from      uint64
		since     time.Time
		next      uint64
		again     bool
		wantFrom  uint64
		wantSince time.Time
	}{
		{"follower ahead of the joiner's read", 277, last.Add(-time.Second), 264, false, 264, last.Add(-time.Second)},
		{"follower behind the joiner's read", 200, last.Add(-time.Second), 264, false, 200, last.Add(-time.Second)},
		{"joiner read nothing: by time from its last op", 277, last.Add(time.Second), 0, false, 0, last},
		{"follower reading by time, earlier", 0, last.Add(-time.Second), 264, false, 0, last.Add(-time.Second)},
		{"follower reading by time, later", 0, last.Add(time.Second), 264, false, 0, last},
		{"joiner's read failed", 277, last.Add(time.Second), 264, true, 0, last},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := &heldFollower{ids: map[string]time.Time{"other": until}, from: c.from, since: c.since, gen: 3}
			inFlight := f.gen // a read the follower began before the join
			done := false
			w := newHeldWait(func() { done = true })
			f.join("new", until, c.next, last, c.again, false, w)
			w.finish() // the adoption's own share
			if f.from != c.wantFrom || !f.since.Equal(c.wantSince) {
				t.Errorf("follower reads from %d (since %v), want %d (since %v)", f.from, f.since, c.wantFrom, c.wantSince)
			}
			if f.gen == inFlight {
				t.Error("gen unchanged: a read in flight, made without the new session, would move the follower on")
			}
			if _, ok := f.ids["new"]; !ok {
				t.Error("the new session is not followed")
			}
			if done {
				t.Fatal("the hand-over wait finished before the follower read anything with the new session")
			}
			finishAll(f.takeWaits(inFlight))
			if done {
				t.Fatal("the hand-over wait finished by a read made before the join")
			}
			finishAll(f.takeWaits(f.gen))
			if !done {
				t.Error("the hand-over wait not finished by the follower's first read with the new session")
			}
		})
	}
	// A follower spawned for the joiner starts at its read's end.
	f := &heldFollower{ids: map[string]time.Time{}, from: 264, since: last}
	f.join("new", until, 264, last, false, true, nil)
	if f.from != 264 || f.gen != 0 {
		t.Errorf("spawned follower: from %d gen %d, want 264 and 0", f.from, f.gen)
	}
}

// The janitor's bulk adoption joins each session of a chunk to each
// follower with the chunk's one wait (takeHeldAll): the follower's first
// read with them finishes it. Before, each join added a share of the
// wait and the read finished one: the wait never ended, and every
// release request for those sessions waited awaitHeld's whole bound
// twice, past the claimer's releaseTimeout (TestClusterTransports/
// NodeKill: txn-roam5 adopted with txk-wss4; the claimer read the stream,
// and 35 acknowledged messages the adopter's copy took meanwhile were
// lost).
func TestHeldFollowerOneWaitForManySessions(t *testing.T) {
	last := time.Unix(1000, 0)
	until := last.Add(time.Minute)
	done := false
	w := newHeldWait(func() { done = true })
	f := &heldFollower{ids: map[string]time.Time{}, from: 264, since: last}
	f.join("a", until, 264, last, false, true, w)
	f.join("b", until, 264, last, false, false, w)
	f.join("c", until, 264, last, false, false, w)
	w.finish() // the adoption's own share
	if done {
		t.Fatal("the wait finished before the follower read anything with the sessions")
	}
	finishAll(f.takeWaits(f.gen))
	if !done {
		t.Error("the wait not finished by the follower's first read with every session that joined with it")
	}
}
