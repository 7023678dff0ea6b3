package cluster

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/roost-mqtt/roost/broker"
)

// TestReadAheadKeptBeforePlace: a read ahead that reads a node's held
// subject from a place by sequence (the session's last op named where
// that node's own follower stood, opHeldHeader) also reads the copies kept
// there for the session before the place and taken since the session's
// last op: that follower gives kept copies to no session, so nothing
// before the place had them (test/jepsen TestClusterFull long faults,
// seed 614: g0m0's copy on n2 kept pub0#50 at n2:29, n2's rollup of its
// claim back named n2:42 before its own read of the kept copies, n3's
// claim read n2's subject from 42, and g0 never got pub0#50). Holds
// before the place (the follower applied them), copies kept for another
// session and copies taken before the last op are still left out.
func TestReadAheadKeptBeforePlace(t *testing.T) {
	t.Parallel() // in-process engines: it waits on their election, beside the process tests
	nd, js := engineJS(t)
	s := &sessions{n: nd, js: js}
	const node, id = "n2", "ka-sub"
	p := s.partition(node)
	// Each step with a bound per attempt (jsStep):
	// a fresh stream may leave a request unanswered until it has a leader.
	jsStep(t, "create the stream", func(ctx context.Context) error {
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: streamName(p),
			Subjects: []string{sessPrefix + "." + strconv.Itoa(p) + ".>"}, Storage: jetstream.FileStorage, Replicas: 3})
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return nil // an earlier attempt made it
		}
		return err
	})
	since := time.Now() // the session's last op
	held := func(i uint64, payload string, h nats.Header) *nats.Msg {
		m := &broker.Message{Topic: "ka/t", QoS: 1, Payload: []byte(payload)}
		pub, err := encodePublish(m)
		if err != nil {
			t.Fatal(err)
		}
		return &nats.Msg{Subject: s.heldSubject(node), Header: h,
			Data: encodeHeld(originKey{node: "n3", inc: "ab", id: i}, encodeForward(m, nil, pub))}
	}
	keptHdr := func(for_ string, taken time.Time) nats.Header {
		return nats.Header{heldForHeader: []string{for_}, heldTakenHeader: []string{strconv.FormatInt(taken.UnixNano(), 10)}}
	}
	var seqs []uint64
	for i, m := range []*nats.Msg{
		held(1, "kept-other", keptHdr("other", since.Add(time.Millisecond))),
		held(2, "kept-before", keptHdr(id, since.Add(-time.Hour))),
		held(3, "kept", keptHdr(id, since.Add(time.Millisecond))),
		held(4, "applied", nil), // held for the node, before the place: its follower applied it
		held(5, "after", nil),   // the place
	} {
		jsStep(t, "publish", func(ctx context.Context) error {
			ack, err := js.PublishMsg(ctx, m, jetstream.WithMsgID(fmt.Sprint("ka", i)))
			if err == nil {
				seqs = append(seqs, ack.Sequence)
			}
			return err
		})
	}
	rec := &broker.StoredSession{ClientID: id, Subs: []broker.StoredSub{{Filter: "ka/#"}}}
	var r heldRead
	jsStep(t, "read ahead", func(ctx context.Context) error {
		r = s.readAhead(ctx, node, seqs[4], since, time.Time{}, rec)
		return r.err
	})
	var got []string
	for _, h := range r.msgs {
		got = append(got, string(h.rm.Payload))
	}
	if fmt.Sprint(got) != "[kept after]" {
		t.Fatalf("read ahead from %s:%d got %v, want [kept after]: the copy kept for %s before the place, and what is held from the place on",
			node, seqs[4], got, id)
	}
	if r.next != seqs[4]+1 {
		t.Fatalf("next %d, want %d", r.next, seqs[4]+1)
	}

	// Failed (here at once: its context is done), a read by sequence
	// leaves its catch-up cap no later than where kept copies count
	// from, for its own subject's keep or not: the adoption's ops carry
	// that as their made time, from which the next reader counts the
	// kept copies (unreadKept; seed 1129: capped at the read's start,
	// 23 kept copies of before it were passed over by every later
	// claim, 11 lost).
	done, cancel := context.WithCancel(context.Background())
	cancel()
	last := since.Add(-time.Minute) // the session's last op, long before this read
	for _, kept := range []time.Time{{}, last.Add(-time.Second), last.Add(time.Second)} {
		r := s.readAhead(done, node, seqs[4], last, kept, rec)
		keptFrom := last
		if !kept.IsZero() {
			keptFrom = minTime(last, kept)
		}
		if r.err == nil {
			t.Fatalf("kept since %v: a read with its context done passed", kept)
		}
		if c := catchUpCap([]heldRead{r}); c.After(keptFrom) {
			t.Errorf("kept since %v: a failed read's cap %v, after %v where kept copies count from: a kept copy taken between is passed over",
				kept, c, keptFrom)
		}
	}
}
