package cluster

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// fakeHeld is a held subject's stream for a lane: while electing it
// refuses every append at once ("no response from stream"), as a
// partition stream without a leader; otherwise it takes it.
type fakeHeld struct {
	mu       sync.Mutex
	electing bool
	landed   []string
}

func (s *fakeHeld) elect(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.electing = on
}

func (s *fakeHeld) got() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.landed)
}

func (s *fakeHeld) publish(m *nats.Msg) (jetstream.PubAckFuture, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := &fakeAck{m: m, ok: make(chan *jetstream.PubAck, 1), errs: make(chan error, 1)}
	if s.electing {
		f.errs <- jetstream.ErrNoStreamResponse
		return f, nil
	}
	s.landed = append(s.landed, string(m.Data))
	f.ok <- &jetstream.PubAck{Sequence: uint64(len(s.landed))}
	return f, nil
}

type fakeAck struct {
	m    *nats.Msg
	ok   chan *jetstream.PubAck
	errs chan error
}

func (f *fakeAck) Ok() <-chan *jetstream.PubAck { return f.ok }
func (f *fakeAck) Err() <-chan error            { return f.errs }
func (f *fakeAck) Msg() *nats.Msg               { return f.m }

// testLane is a lane to s on a node that has nothing else.
func testLane(t *testing.T, s *fakeHeld) *holdLane {
	n := &Node{log: slog.New(slog.DiscardHandler)}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	t.Cleanup(func() {
		n.cancel()
		n.wg.Wait()
	})
	return &holdLane{n: n, node: "n3", publish: s.publish}
}

// answer waits (bounded) for f's answer.
func answer(t *testing.T, f jetstream.PubAckFuture) error {
	t.Helper()
	select {
	case <-f.Ok():
		return nil
	case err := <-f.Err():
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no answer in 10 s", f.Msg().Data)
		return nil
	}
}

// Appends refused while the stream elects are published again by the
// lane, and nothing newer lands before them: the stream has them in the
// order made (bench/jepsen/RESULTS.md "t221b").
func TestHoldLaneOrder(t *testing.T) {
	s := &fakeHeld{}
	l := testLane(t, s)
	var fs []jetstream.PubAckFuture
	add := func(id string, until time.Time) {
		f, err := l.append(&nats.Msg{Subject: "held", Data: []byte(id)}, nil, until)
		if err != nil {
			t.Fatal(err)
		}
		fs = append(fs, f)
	}
	later := time.Now().Add(time.Minute)
	add("a", later)
	add("b", later)
	s.elect(true)
	add("c", later)
	add("d", time.Now().Add(50*time.Millisecond)) // given up within the election
	add("e", later)
	time.Sleep(3 * heldRetryWait) // the election lasts; c is refused again meanwhile
	s.elect(false)
	add("f", later) // after the election, before c is in
	for i, f := range fs {
		err := answer(t, f)
		if i == 3 {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("d: %v, want given up (%v)", err, context.DeadlineExceeded)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", f.Msg().Data, err)
		}
	}
	if got, want := s.got(), []string{"a", "b", "c", "e", "f"}; !slices.Equal(got, want) {
		t.Errorf("landed %v, want %v", got, want)
	}
	if got := s.got(); len(got) > 0 {
		add("g", later) // the lane goes on unblocked
		if err := answer(t, fs[len(fs)-1]); err != nil || !slices.Equal(s.got(), append(got, "g")) {
			t.Errorf("g after the election: %v, landed %v", err, s.got())
		}
	}
}

// A publish that fails outright is answered with its error and does not
// stop the lane.
func TestHoldLaneFailed(t *testing.T) {
	s := &fakeHeld{}
	l := testLane(t, s)
	bad := errors.New("connection closed")
	pub := l.publish
	l.publish = func(m *nats.Msg) (jetstream.PubAckFuture, error) {
		if string(m.Data) == "x" {
			return nil, bad
		}
		return pub(m)
	}
	if _, err := l.append(&nats.Msg{Data: []byte("x")}, nil, time.Now().Add(time.Minute)); !errors.Is(err, bad) {
		t.Fatalf("x: %v, want %v", err, bad)
	}
	f, err := l.append(&nats.Msg{Data: []byte("y")}, nil, time.Now().Add(time.Minute))
	if err != nil || answer(t, f) != nil || !slices.Equal(s.got(), []string{"y"}) {
		t.Errorf("y: %v, landed %v", err, s.got())
	}
}
