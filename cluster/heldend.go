package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Where the others' holds for a node back from a silence ended.
//
// A node back from a pause (catchUpOnReturn) has its persistent sessions
// catch up: what the others forward to it is queued behind what they
// held for it, until its follower read its held subject to the end. But a
// hold a peer made before it heard the node again may land in that
// subject after the follower read its end: its partition stream, whose
// leader the node's return deposed (returnElection), took it seconds
// later, and meanwhile the peer forwarded what its publisher sent next.
// Applied after the catch-up, the held message reached its session after
// newer ones of its publisher [MQTT-4.6.0-6] (TestReproPausedNodeHeldOrder,
// 1 run in 10 with returnElection: q1-50 landed 0.53 s after the first
// read). Reading the end again after a fixed time (pz25's returnLanding,
// 1.5 s) missed a hold that landed later (TestReproReturnHoldLanding:
// one landing 3 s after the rejoin).
//
// So the returning node asks each peer where its holds for the node
// ended (heldEndSubject). The peer answers once it routes by the node's
// interest as of the request (its orphan interest in the node dropped:
// nothing more is held for it, what its publishers send next is
// forwarded) and every append it made to the node's held subject before
// then is answered (its lane: in the stream or given up), with the
// highest stream sequence of those the stream took; the publish gate's
// write side between the two makes the point fall after any publish that
// matched the orphan interest. The catch-up then reads the held subject
// to the highest such sequence before it ends. A peer that does not
// answer (dead, or silent since the return for deadAfter) forwards
// nothing to the node: it is not waited for.

const (
	// heldEndSubject.<node>: ask node where its holds for the asking
	// node ended.
	heldEndSubject = subjPrefix + ".heldend"
	// heldEndWait bounds a peer's answer to one request: its wait for
	// its view of the asking node, then for its lane. Not yet: "not yet"
	// is answered, and the node asks again (a new point, later).
	heldEndWait = 2 * time.Second
	// heldEndPoll is how often a peer looks at its view and its lane
	// while it answers.
	heldEndPoll = 5 * time.Millisecond
	// heldEndRouted: how long after its return a node allows its routes
	// to come back before a peer with neither a route nor a responder
	// counts as dead (a route the pause let time out is dialled again).
	heldEndRouted = 2 * heartbeatEvery
	// heldEndFresh: how lately a peer must have heard the asking node to
	// answer (heldEnd).
	heldEndFresh = 2 * heartbeatEvery
)

// heldEndRequest asks for the end of the holds for node (incarnation
// inc) made before the answering node routed by node's interest at
// version or later.
type heldEndRequest struct {
	node, inc string
	version   uint64
}

func (q heldEndRequest) encode() []byte {
	b := appendString(appendString([]byte{wireVersion}, q.node), q.inc)
	return binary.AppendUvarint(b, q.version)
}

func decodeHeldEndRequest(b []byte) (heldEndRequest, error) {
	r := reader{b: b}
	if r.byte() != wireVersion {
		return heldEndRequest{}, errWire
	}
	q := heldEndRequest{node: r.string(), inc: r.string()}
	q.version = r.uvarint()
	if r.err != nil {
		return heldEndRequest{}, errWire
	}
	return q, nil
}

// encodeHeldEnd is the answer: whether the holds' end is known, and the
// highest stream sequence of a hold the stream took (0: none).
func encodeHeldEnd(ok bool, seq uint64) []byte {
	return binary.AppendUvarint([]byte{wireVersion, boolBit(ok, 0)}, seq)
}

func decodeHeldEnd(b []byte) (ok bool, seq uint64, err error) {
	r := reader{b: b}
	if r.byte() != wireVersion {
		return false, 0, errWire
	}
	ok = r.byte()&1 == 1
	seq = r.uvarint()
	if r.err != nil {
		return false, 0, errWire
	}
	return ok, seq, nil
}

// onHeldEndRequest answers a node back from a silence where this node's
// holds for it ended (above).
func (n *Node) onHeldEndRequest(m *nats.Msg) {
	q, err := decodeHeldEndRequest(m.Data)
	if err != nil {
		n.log.Warn("cluster: bad held end request")
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		ok, seq := n.heldEnd(q, time.Now().Add(heldEndWait))
		if err := m.Respond(encodeHeldEnd(ok, seq)); err != nil {
			n.log.Debug("cluster: answering a held end request", "peer", q.node, "err", err)
		}
	}()
}

// heldEnd returns where this node's holds for q.node ended, once it routes
// by q.node's interest and heard it lately (false if not by deadline).
// Lately: the request can come before the heartbeat the node sent on its
// return, while this node's view of it is the one from before its
// silence, not dropped yet; answered then, this node could drop it a tick
// later and hold for it after the answer. Heard within heldEndFresh, it
// is not dropped for deadAfter.
func (n *Node) heldEnd(q heldEndRequest, deadline time.Time) (bool, uint64) {
	for !n.remote.current(q.node, q.inc, q.version) || !n.remote.heardSince(q.node, time.Now().Add(-heldEndFresh)) {
		if time.Now().After(deadline) || n.ctx.Err() != nil {
			return false, 0
		}
		time.Sleep(heldEndPoll)
	}
	l := n.lane(q.node)
	// Under the gate's write side: a publish that matched the orphan
	// interest before the view changed has made its holds (Forward runs
	// under the read side).
	n.gate.Lock()
	mark := l.mark()
	n.gate.Unlock()
	seq, ok := l.landedBy(mark, deadline)
	return ok, seq
}

// heldEnds gathers the peers' answers for one return from a silence.
type heldEnds struct {
	done chan struct{}
	// seq: the highest end answered; missing: the peers not waited for,
	// with why. Read once done is closed.
	seq     uint64
	missing []string
}

// askHeldEnds asks every node ever heard from but this one where its
// holds for this node ended (heldEndOf), until bound after back.
func (n *Node) askHeldEnds(back time.Time, bound time.Duration) *heldEnds {
	e := &heldEnds{done: make(chan struct{})}
	peers := slices.DeleteFunc(n.remote.heardNodes(), func(p string) bool { return p == n.cfg.Node })
	body := heldEndRequest{node: n.cfg.Node, inc: n.inc, version: n.local.version()}.encode()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer close(e.done)
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, p := range peers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				seq, err := n.heldEndOf(p, body, back, back.Add(bound))
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					e.missing = append(e.missing, p+": "+err.Error())
					return
				}
				e.seq = max(e.seq, seq)
			}()
		}
		wg.Wait()
	}()
	return e
}

// errHeldEndNotYet: a peer did not know where its holds ended within
// heldEndWait (its view of this node, or a hold, not there yet).
var errHeldEndNotYet = errors.New("cluster: the end of its holds not known yet")

// heldEndOf asks peer p where its holds for this node ended, again while
// it does not know yet, until it answers, p is taken for gone (no
// heartbeat from it deadAfter after back: dead or silent, it forwards
// nothing here; or, heldEndRouted after back, no responder and no route
// to it: dead), or deadline.
func (n *Node) heldEndOf(p string, body []byte, back, deadline time.Time) (uint64, error) {
	for {
		try := time.Now().Add(heldEndWait + time.Second)
		if try.After(deadline) {
			try = deadline
		}
		ctx, cancel := context.WithDeadline(n.ctx, try)
		reply, err := n.eng.nc.RequestWithContext(ctx, heldEndSubject+"."+p, body)
		cancel()
		if err == nil {
			var ok bool
			var seq uint64
			if ok, seq, err = decodeHeldEnd(reply.Data); err == nil && ok {
				return seq, nil
			}
			if err == nil {
				err = errHeldEndNotYet
			}
		}
		switch {
		case n.ctx.Err() != nil || !time.Now().Before(deadline):
			return 0, err
		case !n.remote.heard(p) && (time.Since(back) >= deadAfter || time.Since(back) >= heldEndRouted && errors.Is(err, nats.ErrNoResponders) && !n.routes(p)):
			return 0, errors.Join(errNotHeard, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// heardSince reports whether node was last heard from after t.
func (r *remoteInterest) heardSince(node string, t time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.peers[node]
	return p != nil && p.lastSeen.After(t)
}

// routes reports whether this node has a route to node (false if that
// is not known).
func (n *Node) routes(node string) bool {
	routed, err := n.eng.routedNodes()
	return err == nil && routed[node]
}

// wait returns the highest end answered and the peers not waited for,
// once all are in; ctx's end returns what is in.
func (e *heldEnds) wait(ctx context.Context) (uint64, []string) {
	select {
	case <-e.done:
		return e.seq, e.missing
	case <-ctx.Done():
		return 0, []string{ctx.Err().Error()}
	}
}
