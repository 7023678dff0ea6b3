package cluster

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A lane's end as of a mark waits for every append made by the mark,
// refused ones published again included, and gives the highest stream
// sequence that landed; appends made after the mark are not waited for
// (heldend.go; TestReproReturnHoldLanding).
func TestHoldLaneLandedBy(t *testing.T) {
	s := &fakeHeld{}
	l := testLane(t, s)
	later := time.Now().Add(time.Minute)
	if seq, ok := l.landedBy(l.mark(), time.Now().Add(time.Second)); !ok || seq != 0 {
		t.Fatalf("an empty lane: %d %v, want 0 true", seq, ok)
	}
	for _, id := range []string{"a", "b"} {
		if _, err := l.append(&nats.Msg{Data: []byte(id)}, nil, later); err != nil {
			t.Fatal(err)
		}
	}
	s.elect(true)
	if _, err := l.append(&nats.Msg{Data: []byte("c")}, nil, later); err != nil {
		t.Fatal(err)
	}
	mark := l.mark()
	if _, ok := l.landedBy(mark, time.Now().Add(3*heldRetryWait)); ok {
		t.Fatalf("c refused while the stream elects: its end is not known yet; landed %v", s.got())
	}
	if _, err := l.append(&nats.Msg{Data: []byte("d")}, nil, later); err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(2*heldRetryWait, func() { s.elect(false) })
	seq, ok := l.landedBy(mark, time.Now().Add(10*time.Second))
	if !ok || seq < 3 {
		t.Fatalf("after the election: %d %v, want c's sequence (3) or more, true; landed %v", seq, ok, s.got())
	}
}

func TestHeldEndWire(t *testing.T) {
	q := heldEndRequest{node: "n3", inc: "abc", version: 77}
	got, err := decodeHeldEndRequest(q.encode())
	if err != nil || got != q {
		t.Fatalf("request: %+v %v, want %+v", got, err, q)
	}
	ok, seq, err := decodeHeldEnd(encodeHeldEnd(true, 1<<40))
	if err != nil || !ok || seq != 1<<40 {
		t.Fatalf("answer: %v %d %v", ok, seq, err)
	}
	if _, err := decodeHeldEndRequest([]byte{wireVersion, 5}); err == nil {
		t.Fatal("a short request decoded")
	}
}

// TestHeldEndsLandedKeptOnError: a catch-up on return whose read of the
// held subject's last message fails (its stream electing a leader) keeps
// the peers' answers for its next pass; dropped, the next pass found no
// landing and ended the catch-up before the holds.
func TestHeldEndsLandedKeptOnError(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := &sessions{n: &Node{ctx: ctx, log: slog.New(slog.NewTextHandler(io.Discard, nil))}} // no streams: heldLast fails
	e := &heldEnds{done: make(chan struct{}), seq: 7, missing: []string{"n2: not heard"}}
	close(e.done)
	s.landing = e
	if _, err := s.heldEndsLanded("ROOST_SESS_0"); err == nil {
		t.Fatal("heldEndsLanded without streams: no error")
	}
	if s.landing != e {
		t.Fatal("the peers' answers were dropped on a failed read: the next pass ends the catch-up before the holds")
	}
}

// ackFloorConsumer is a held consumer whose state says what a test sets:
// only Info is called.
type ackFloorConsumer struct {
	jetstream.Consumer
	floor, pending uint64
}

func (c *ackFloorConsumer) Info(context.Context) (*jetstream.ConsumerInfo, error) {
	return &jetstream.ConsumerInfo{AckFloor: jetstream.SequenceInfo{Stream: c.floor}, NumAckPending: int(c.pending)}, nil
}

// A follower that applied a message past its end has not read to it while
// earlier messages are unacknowledged: delivered to a fetch it never read
// (its answer late, as while a node back from a pause has its streams
// elect), they come again after AckWait, and the
// return's catch-up ended before them (TestReproPausedNodeHeldOrder,
// session 27: seq 104 applied, the catch-up ended, seqs 1-103 came 7 s
// later after the newer forwards).
func TestHeldReadEndAckFloor(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := &sessions{n: &Node{ctx: ctx, log: slog.New(slog.NewTextHandler(io.Discard, nil))}}
	s.gate.next.Store(105) // seq 104 applied
	cons := &ackFloorConsumer{floor: 0, pending: 103}
	for _, got := range []int{1, 0} {
		if end, err := s.heldReadEnd(cons, got, 104, &heldGap{}); err != nil || end {
			t.Fatalf("got %d, seq 104 applied, 1-103 unacknowledged: end %v, %v; want no end", got, end, err)
		}
	}
	cons.floor, cons.pending = 104, 0
	if end, err := s.heldReadEnd(cons, 1, 104, &heldGap{}); err != nil || !end {
		t.Fatalf("every message to 104 acknowledged: end %v, %v; want the end", end, err)
	}
	s.gate.next.Store(50)
	cons.floor = 40
	if end, err := s.heldReadEnd(cons, 3, 104, &heldGap{}); err != nil || end {
		t.Fatalf("a read short of its end that brought messages: end %v, %v; want to read on", end, err)
	}
}

// TestHeldGapResets: the follower sends its consumer back to the ack floor
// (resendLost) only when an empty read finds deliveries it never got and
// every message acknowledged past the floor is its own: at its first
// look nothing was pending. Reset with an earlier process's deliveries
// out, the messages that process applied and acknowledged past the floor
// would be applied again (duplicates); never reset, the lost ones came
// only at AckWait, past the catch-up's bound (TestReproReturnFetchLost).
func TestHeldGapResets(t *testing.T) {
	now := time.Now()
	lost := &jetstream.ConsumerInfo{NumAckPending: 2, AckFloor: jetstream.SequenceInfo{Stream: 6}, Delivered: jetstream.SequenceInfo{Stream: 9}}
	var g heldGap
	g.first(&jetstream.ConsumerInfo{NumAckPending: 1})
	g.first(&jetstream.ConsumerInfo{}) // only the first look counts
	if g.resets(lost, now) {
		t.Fatal("reset with an earlier process's deliveries pending at the first look")
	}
	g = heldGap{}
	g.first(&jetstream.ConsumerInfo{})
	if !g.resets(lost, now) {
		t.Fatal("no reset: two delivered messages never got wait for AckWait")
	}
	if g.resets(&jetstream.ConsumerInfo{AckFloor: jetstream.SequenceInfo{Stream: 6}, Delivered: jetstream.SequenceInfo{Stream: 6}}, now) {
		t.Fatal("reset with nothing pending")
	}
	g.reset = now
	if g.resets(lost, now.Add(time.Second)) || !g.resets(lost, now.Add(heldResetEvery)) {
		t.Fatal("resets not one per heldResetEvery")
	}
	g = heldGap{}
	g.first(nil)
	if g.resets(lost, now) {
		t.Fatal("reset with the consumer's state at the first look unknown")
	}
}
