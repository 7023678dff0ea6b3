package cluster

import (
	"encoding/binary"
	"log/slog"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
)

// oldReleaseReply is how a node from before reply 3 read an answer to its
// release request: 0 and 2 by their code, anything else as 1, a session
// from the third byte on.
func oldReleaseReply(b []byte) (rec *broker.StoredSession, answered bool) {
	if len(b) < 2 || b[0] != wireVersion {
		return nil, true
	}
	switch b[1] {
	case 0:
		return nil, true
	case 2:
		return nil, false
	}
	rec, err := decodeSession("c", b[2:])
	if err != nil {
		return nil, false
	}
	return rec, true
}

// TestReleaseReplyHeldSince: a handover whose held messages were not all
// applied (reply 3) gives the claimer the session and the time to read
// them from; a node that does not know reply 3 finds the session
// unreadable and reads the stream, never a session made of the time's
// bytes; reply 1 still carries no time.
func TestReleaseReplyHeldSince(t *testing.T) {
	o := &owners{n: &Node{log: slog.New(slog.DiscardHandler)}}
	sess := &broker.StoredSession{ClientID: "c", Expiry: 60, Subs: []broker.StoredSub{{Filter: "a/#"}}}
	b, err := encodeSession(sess)
	if err != nil {
		t.Fatal(err)
	}
	for _, since := range []time.Time{
		time.Unix(0, heldSinceMin), // the least the reply allows
		time.Unix(1, 0),
		time.Date(2026, 12, 5, 7, 58, 0, 123456789, time.UTC),
	} {
		reply := append(binary.AppendUvarint([]byte{wireVersion, 3}, uint64(since.UnixNano())), b...)
		h := o.releaseReply("n1", "c", reply)
		if !h.answered || h.rec == nil || len(h.rec.Subs) != 1 || h.rec.Subs[0].Filter != "a/#" {
			t.Fatalf("since %v: got %+v, want the session answered", since, h)
		}
		if !h.heldSince.Equal(since) {
			t.Errorf("held since %v, want %v", h.heldSince, since)
		}
		if h.dropped {
			t.Error("reply 3 read as a dropped will")
		}
		if rec, answered := oldReleaseReply(reply); rec != nil || answered {
			t.Errorf("since %v: an older node reads reply 3 as a session (%+v, answered %v)", since, rec, answered)
		}
	}
	h := o.releaseReply("n1", "c", append([]byte{wireVersion, 1}, b...))
	if h.rec == nil || !h.answered || !h.heldSince.IsZero() {
		t.Fatalf("reply 1: got %+v", h)
	}
	for _, bad := range [][]byte{
		{wireVersion, 3},
		{wireVersion, 3, 0},    // no time
		{wireVersion, 3, 0x80}, // a cut uvarint
		append([]byte{wireVersion, 3, 5}, b[:len(b)-1]...), // a cut session
	} {
		if h := o.releaseReply("n1", "c", bad); h.rec != nil || h.answered {
			t.Errorf("% x: got %+v, want unreadable (the stream read)", bad, h)
		}
	}
}

// TestAwaitHeldBound: awaitHeld gives up at the deadline it is given,
// with the time its held messages are to be read from, and returns zero
// once they are applied or when none are pending.
func TestAwaitHeldBound(t *testing.T) {
	o := &owners{n: &Node{log: slog.New(slog.DiscardHandler)}}
	if s := o.awaitHeld("a", time.Now().Add(time.Hour)); !s.IsZero() {
		t.Fatalf("nothing pending: got %v", s)
	}
	since := time.Now().Add(-time.Minute)
	clear := o.holdRelease([]string{"a"}, []time.Time{since})
	// A deadline already past: one look after another's bound (onRelease)
	// does not wait a bound of its own.
	if s := o.awaitHeld("a", time.Now().Add(-time.Millisecond)); !s.Equal(since) {
		t.Fatalf("gave up: got %v, want %v", s, since)
	}
	done := make(chan time.Time, 1)
	go func() { done <- o.awaitHeld("a", time.Now().Add(time.Hour)) }()
	clear()
	select {
	case s := <-done:
		if !s.IsZero() {
			t.Fatalf("applied: got %v, want zero", s)
		}
	case <-time.After(time.Minute):
		t.Fatal("awaitHeld did not end once the held messages were applied")
	}
}
