package cluster

import (
	"errors"
	"io"
	"log/slog"
	"testing"
)

// An adoption from the stream takes the id's unread mark only as the
// session goes in the server: a release request that took it first
// supersedes the adoption, and one that comes after finds the hand-over
// wait set under the same lock (never "nothing to hand over" while the
// session is on its way in: TestClusterTransports/NodeKill, Session
// Present 0).
func TestBeginAdopt(t *testing.T) {
	o := &owners{unread: map[string]bool{}, epochs: map[string]epochAt{}}
	o.noteEpoch("a", 9)
	if w := o.beginAdopt("a", 9); w != nil {
		t.Fatal("adopted without the unread mark (a release request took it)")
	}
	o.unread["a"] = true
	w := o.beginAdopt("a", 9)
	if w == nil {
		t.Fatal("not adopted with the unread mark")
	}
	if o.takeUnread("a") {
		t.Error("the mark stayed: a release request would send the claimer to the stream too")
	}
	o.mu.Lock()
	ch := o.heldPending["a"]
	o.mu.Unlock()
	if ch == nil {
		t.Fatal("no hand-over wait set with the mark taken")
	}
	w.finish()
	select {
	case <-ch:
	default:
		t.Error("the hand-over wait not ended once the adoption finished")
	}
}

// TestBeginAdoptAnswered: a claim whose release request a newer claim's
// answered (its epoch forgotten here, handleRelease) does not adopt, even
// with the unread mark set again by a fence of an older copy for that
// newer claim (endedUnread; test/jepsen TestClusterFull seed 591: g1 lost
// 20 messages to n2's superseded copy of g1m0).
func TestBeginAdoptAnswered(t *testing.T) {
	o := &owners{unread: map[string]bool{}, epochs: map[string]epochAt{}}
	o.noteEpoch("g1m0", 9) // this node's claim, reading the stream
	o.setUnread("g1m0", true)
	// The newer claim's release request, answered: its mark taken, the
	// epoch forgotten (handleRelease), the session left to the stream.
	if !o.takeUnread("g1m0") {
		t.Fatal("no mark for the release request to take")
	}
	o.mu.Lock()
	delete(o.epochs, "g1m0")
	o.mu.Unlock()
	o.setUnread("g1m0", true) // endedUnread: a fence of an older copy here, for the newer claim
	if w := o.beginAdopt("g1m0", 9); w != nil {
		w.finish()
		t.Fatal("a superseded claim adopted the session: its release request was answered to a newer claim")
	}
	// A claim of its own that stands still adopts.
	o.noteEpoch("g1m0", 11)
	o.setUnread("g1m0", true)
	if w := o.beginAdopt("g1m0", 11); w == nil {
		t.Fatal("the standing claim did not adopt")
	} else {
		w.finish()
	}
}

// TestClaimStanding: a takeover that outlasted its claim is refused, not
// answered as a success. A newer claim's release request answered here
// (its epoch forgotten, the newer one seen: handleRelease), or a newer
// record seen by the watcher alone, supersedes the claim; an older
// record does not. Answered as a success, n2's CONNECT of g0m0, its live
// move's adopted session handed to n1's newer claim while the move waited
// for its ops to be durable, got Session Present 0 (test/jepsen
// TestClusterFull seed 847; TestReproMoveInHandedAway).
func TestClaimStanding(t *testing.T) {
	n := &Node{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	fresh := func() *owners {
		o := &owners{n: n, unread: map[string]bool{}, epochs: map[string]epochAt{}}
		o.noteEpoch("g0m0", 5) // this node's claim, its move adopted
		return o
	}
	for _, c := range []struct {
		name   string
		after  func(o *owners)
		stands bool
	}{
		{"nothing since", func(*owners) {}, true},
		{"an older record seen", func(o *owners) { o.sawOther("g0m0", 4) }, true},
		{"a newer claim's release request answered", func(o *owners) {
			o.mu.Lock()
			delete(o.epochs, "g0m0")
			o.mu.Unlock()
			o.sawOther("g0m0", 6)
		}, false},
		{"a newer record seen by the watcher only", func(o *owners) { o.sawOther("g0m0", 6) }, false},
	} {
		o := fresh()
		c.after(o)
		err := o.standing("g0m0", 5, nil)
		if got := err == nil; got != c.stands {
			t.Errorf("%s: standing = %v, want the claim to stand: %v", c.name, err, c.stands)
		}
		if err != nil && !errors.Is(err, errSuperseded) {
			t.Errorf("%s: %v, want errSuperseded (the CONNECT closed without CONNACK)", c.name, err)
		}
	}
	// A takeover's own error stays the outcome.
	failed := errors.New("reading the session")
	if err := fresh().standing("g0m0", 5, failed); !errors.Is(err, failed) {
		t.Errorf("standing = %v, want the takeover's error", err)
	}
}
