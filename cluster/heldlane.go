package cluster

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The holds of this node land in a held subject in the order it made
// them.
//
// Appends sent one after another on one connection to one subject land
// in that order, unless the subject's partition stream does not take one:
// while it elects a leader nobody answers ("no response from stream"),
// and the hold must be published again. Published again by its waiter
// (the publisher's confirmation, which a connection's output calls one
// message after another), it landed seconds after the holds of newer
// messages routed once the stream had a leader, and a session that took
// the held messages got them out of their publisher's order
// [MQTT-4.6.0-5] (bench/jepsen/RESULTS.md "t221b"; TestReproHoldElectionOrder).
// nats.go's own retries (two, 250 ms apart) did the same within half a
// second.
//
// So every append to a held subject goes through that subject's lane
// (holdLane): sent at once while the stream takes them; once one is not
// taken, nothing newer is sent until it is in: it is published again
// every heldRetryWait, alone, until the stream takes it or its bound
// passes, and then the ones after it are sent, in order. An append is
// answered to its waiter only once it is in or given up.
//
// Not closed: a hold refused while newer ones were already on their way
// (sent in the round trip before the refusal came back) lands after those
// of them the stream took, which needs a leader elected within that round
// trip; the lane logs it ("a hold landed before an earlier one").

// holdLane orders this node's appends to one held subject.
type holdLane struct {
	n    *Node
	node string // whose held subject
	// publish sends an append to the stream (publishHeld).
	publish func(*nats.Msg) (jetstream.PubAckFuture, error)
	// mu is held across a send, so that sends go out in the lane's
	// order; taken after Node.holdOutMu (holdOut), before sessions.mu
	// (publishHeld).
	mu sync.Mutex
	// q: the appends not answered yet, in the order made.
	q []*laneHold
	// blocked: an append was refused; the ones not sent since wait.
	blocked bool
	// took: the stream took one of the lane's appends since the last
	// refusal, so it has a leader: what waits is sent at once.
	took bool
	// waking: a retry of the first refused append is due (retry).
	waking bool
	// made counts the appends made in the lane (each laneHold's num);
	// landed is the highest stream sequence of one the stream took:
	// heldend.go tells a node back from a silence where the holds made
	// for it before a point (mark) ended.
	made, landed uint64
}

// laneHold is one append in a lane, and its future: Ok or Err gives its
// one answer, once it is in the stream or given up.
type laneHold struct {
	m   *nats.Msg
	num uint64 // its place among the lane's appends (holdLane.made)
	// first stands in for the first publish when it returns a future (a
	// test fault); nil: published.
	first func(*nats.Msg) jetstream.PubAckFuture
	until time.Time // given up after
	tries int
	out   bool  // an attempt is on its way
	err   error // the last attempt's refusal, while not out
	ok    chan *jetstream.PubAck
	errs  chan error
}

func (h *laneHold) Ok() <-chan *jetstream.PubAck { return h.ok }
func (h *laneHold) Err() <-chan error            { return h.errs }
func (h *laneHold) Msg() *nats.Msg               { return h.m }

// holdLanes are a node's lanes, one per held subject it appends to.
type holdLanes struct {
	mu sync.Mutex
	m  map[string]*holdLane
}

// lane returns the lane of node's held subject.
func (n *Node) lane(node string) *holdLane {
	n.lanes.mu.Lock()
	defer n.lanes.mu.Unlock()
	if n.lanes.m == nil {
		n.lanes.m = make(map[string]*holdLane)
	}
	l := n.lanes.m[node]
	if l == nil {
		l = &holdLane{n: n, node: node, publish: n.publishHeld}
		n.lanes.m[node] = l
	}
	return l
}

// appendHeld appends m to node's held subject through its lane and
// returns the append's future, answered once m is in the stream, or with
// the error that gave it up (a refusal past ForwardTimeout). first, if
// not nil, may stand in for m's first publish (test faults). An error
// now: m could not be published at all.
func (n *Node) appendHeld(node string, m *nats.Msg, first func(*nats.Msg) jetstream.PubAckFuture) (jetstream.PubAckFuture, error) {
	return n.lane(node).append(m, first, time.Now().Add(n.cfg.ForwardTimeout))
}

// publishHeld publishes an append to a held subject, without nats.go's
// retries: they would send it again after newer appends.
func (n *Node) publishHeld(m *nats.Msg) (jetstream.PubAckFuture, error) {
	n.sess.mu.Lock()
	js := n.sess.js
	n.sess.mu.Unlock()
	return js.PublishMsgAsync(m, jetstream.WithRetryAttempts(0))
}

// append is appendHeld in l, given up at until.
func (l *holdLane) append(m *nats.Msg, first func(*nats.Msg) jetstream.PubAckFuture, until time.Time) (jetstream.PubAckFuture, error) {
	h := &laneHold{m: m, first: first, until: until, ok: make(chan *jetstream.PubAck, 1), errs: make(chan error, 1)}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.made++
	h.num = l.made
	if l.blocked {
		l.q = append(l.q, h)
		return h, nil
	}
	if err := l.send(h); err != nil {
		return nil, err
	}
	l.q = append(l.q, h)
	return h, nil
}

// send publishes h (again), under l.mu: the lane's order is the order of
// its sends.
func (l *holdLane) send(h *laneHold) error {
	h.tries++
	var f jetstream.PubAckFuture
	if h.tries == 1 && h.first != nil {
		f = h.first(h.m)
	}
	if f == nil {
		f = l.n.fault.electing(l.node, h.m)
	}
	if f == nil {
		var err error
		if f, err = l.publish(h.m); err != nil {
			return err
		}
	}
	h.out, h.err = true, nil
	l.n.wg.Add(1)
	go l.await(h, f)
	return nil
}

// await waits for h's attempt f, until h's bound.
func (l *holdLane) await(h *laneHold, f jetstream.PubAckFuture) {
	defer l.n.wg.Done()
	t := time.NewTimer(time.Until(h.until))
	defer t.Stop()
	var ack *jetstream.PubAck
	var err error
	select {
	case ack = <-f.Ok():
	case err = <-f.Err():
	case <-t.C:
		err = context.DeadlineExceeded
	case <-l.n.ctx.Done():
		err = l.n.ctx.Err()
	}
	l.answered(h, ack, err)
}

// answered takes the answer to h's attempt.
func (l *holdLane) answered(h *laneHold, ack *jetstream.PubAck, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	h.out = false
	switch {
	case err == nil:
		l.took = true
		if ack != nil {
			l.landed = max(l.landed, ack.Sequence)
		}
		if i := slices.Index(l.q, h); l.blocked && slices.ContainsFunc(l.q[:max(i, 0)], waiting) {
			l.n.log.Warn("cluster: a hold landed before an earlier one its stream did not take", "peer", l.node)
		}
		l.done(h, ack, nil)
	case holdAgain(err) && time.Now().Before(h.until) && l.n.ctx.Err() == nil:
		h.err = err
		l.blocked, l.took = true, false
	default:
		l.done(h, nil, fmt.Errorf("held for %s: %w", l.node, err))
	}
	l.kick()
}

// waiting reports whether h waits to be sent (again).
func waiting(h *laneHold) bool { return !h.out && (h.err != nil || h.tries == 0) }

// done answers h and takes it out of the lane.
func (l *holdLane) done(h *laneHold, ack *jetstream.PubAck, err error) {
	l.q = slices.DeleteFunc(l.q, func(o *laneHold) bool { return o == h })
	if err != nil {
		h.errs <- err
		return
	}
	h.ok <- ack
}

// kick moves a blocked lane on, under l.mu: once the answers of the
// appends after the first waiting one are in, it sends all that wait if
// the stream took one since its refusal, or else the first alone after
// heldRetryWait (retry).
func (l *holdLane) kick() {
	if !l.blocked {
		return
	}
	i := slices.IndexFunc(l.q, waiting)
	if i < 0 {
		l.blocked = false
		return
	}
	if slices.ContainsFunc(l.q[i:], func(h *laneHold) bool { return h.out }) {
		return // newer ones on their way: their answers first
	}
	if !l.took {
		if !l.waking {
			l.waking = true
			time.AfterFunc(heldRetryWait, l.retry)
		}
		return
	}
	l.blocked = false
	for _, h := range slices.Clone(l.q[i:]) {
		if !time.Now().Before(h.until) {
			l.done(h, nil, fmt.Errorf("held for %s: %w (%w)", l.node, context.DeadlineExceeded, h.err))
			continue
		}
		l.sendAgain(h)
	}
}

// retry publishes the first waiting append again, alone, unless its
// bound passed.
func (l *holdLane) retry() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.waking = false
	if err := l.n.ctx.Err(); err != nil {
		// The node is closing: nothing is sent any more.
		for _, h := range slices.Clone(l.q) {
			if !h.out {
				l.done(h, nil, fmt.Errorf("held for %s: %w", l.node, err))
			}
		}
		return
	}
	for l.blocked {
		i := slices.IndexFunc(l.q, waiting)
		if i < 0 || slices.ContainsFunc(l.q[i:], func(h *laneHold) bool { return h.out }) {
			l.kick()
			return
		}
		h := l.q[i]
		if !time.Now().Before(h.until) {
			l.done(h, nil, fmt.Errorf("held for %s: %w (%w)", l.node, context.DeadlineExceeded, h.err))
			continue
		}
		l.n.log.Debug("cluster: holding again: its partition stream did not answer, or the same hold was in process", "peer", l.node, "err", h.err)
		l.sendAgain(h)
		return
	}
}

// sendAgain sends h, waiting, or answers it with the error of a publish
// that failed outright.
func (l *holdLane) sendAgain(h *laneHold) {
	if err := l.send(h); err != nil {
		l.done(h, nil, fmt.Errorf("held for %s: %w", l.node, err))
	}
}

// mark returns the lane's point as of now: the appends made so far.
func (l *holdLane) mark() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.made
}

// landedBy returns, once every append made by mark is answered (in the
// stream or given up), the highest stream sequence of the lane's appends
// the stream took; false if some were still not answered at deadline.
func (l *holdLane) landedBy(mark uint64, deadline time.Time) (uint64, bool) {
	for {
		l.mu.Lock()
		open := slices.ContainsFunc(l.q, func(h *laneHold) bool { return h.num <= mark })
		landed := l.landed
		l.mu.Unlock()
		if !open {
			return landed, true
		}
		if time.Now().After(deadline) || l.n.ctx.Err() != nil {
			return 0, false
		}
		time.Sleep(heldEndPoll)
	}
}
