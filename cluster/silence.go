package cluster

import (
	"sync"
	"sync/atomic"
	"time"
)

// When an op made on a node back from a silence counts as made.
//
// Readers take a session's last op (its Roost-Op-Made) as the point from
// which what was held for it is not in its record: held subjects are read
// from then on (heldahead.go, the janitor). That holds for a node whose
// follower read its held subject as it was written. A node that was
// silent (paused: the others dropped it after deadAfter without its
// heartbeat and held for it) runs its sessions again at once, and its
// follower reads what was held for it meanwhile only after, a catch-up of
// up to seconds (catchUpOnReturn). An op made in between, stamped with
// its real time, moved every reader past holds its session never got:
// test/jepsen TestClusterFull seed 41 (session 21): n3, paused with ps3's
// copy, lost the id to n2's claim, whose stream read failed and wrote no
// op; back from the pause it journalled the DISCONNECT queued in its
// socket (made 36.227), the session's last op; n2's next claim read every
// held subject from there, and 29 acknowledged messages held for ps3 at
// 35.99-36.223 were read by nobody (bench/jepsen RESULTS.md, ps41).
//
// So from the end of a silence until this node's follower has read its
// held subject to the end, once, in a read begun after the return, its
// ops count as made at the silence's start: the last heartbeat it sent
// before it. Nothing was held for this node before the others missed that
// heartbeat, and what it held since is read again by a reader; a message
// read again that the record has already is had (recordHas), and a QoS 2
// message the session completed is not delivered again (its Origin among
// the session's Seen).

// silenceMark is a silence this node is back from whose holds its own
// follower has not read yet.
type silenceMark struct {
	// beat: when announceLoop last sent a heartbeat (Unix ns; 0: none
	// yet). Older than deadAfter, a silence is under way: the others
	// may have dropped this node, and announceLoop did not run yet to
	// find it back (an op is appended first after a SIGCONT as often).
	beat atomic.Int64

	mu   sync.Mutex
	from time.Time // the silence's start (the last heartbeat before it); zero: none
	back time.Time // when this node found itself back
}

// beating notes a heartbeat sent at now.
func (m *silenceMark) beating(now time.Time) { m.beat.Store(now.UnixNano()) }

// begin notes a silence from from, found at back. A silence not caught up
// with yet keeps its start: its holds are still unread.
func (m *silenceMark) begin(from, back time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.from.IsZero() || from.Before(m.from) {
		m.from = from
	}
	m.back = back
}

// caughtUp notes that this node's follower read its held subject to the
// end in a read begun at began: a silence found back by then is caught up
// with.
func (m *silenceMark) caughtUp(began time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.from.IsZero() && !m.back.After(began) {
		m.from, m.back = time.Time{}, time.Time{}
	}
}

// madeAt is when an op appended now counts as made (above).
func (m *silenceMark) madeAt(now time.Time) time.Time {
	made := now
	if b := m.beat.Load(); b != 0 {
		if last := time.Unix(0, b); now.Sub(last) > deadAfter {
			made = last
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.from.IsZero() && m.from.Before(made) {
		made = m.from
	}
	return made
}
