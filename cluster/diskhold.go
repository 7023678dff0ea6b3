package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/roost-mqtt/roost/broker"
)

// A full disk here: forwarded messages held for this node.
//
// A QoS 1/2 message forwarded here for a persistent session is confirmed
// once the node's store has the session's copy. With the store's disk
// full (broker.ErrStoreFull) it never has, and the node used to answer
// "not taken": the publisher's node, unable to tell what the message's
// other targets kept, closed the publisher's connection (outcome
// unknown), and one full disk disconnected every publisher in the
// cluster whose messages matched one of its sessions, again and again.
//
// The cluster already keeps messages for sessions whose node cannot
// take them (a dead or silent node): the node's held subject, replicated
// on the engine. So a forward whose copies the store cannot keep is
// appended to this node's own held subject too, under the hold's message
// id (holdMsgID, the id a publisher holding the same message for this
// node would use: kept once), and confirmed once the append is
// replicated (the other replicas carry the quorum; this node's JetStream
// is as short of disk as its store). The session has the message in
// memory meanwhile, as before: its client there gets it, and a live
// move carries it; the store writes it once space returns (a full disk
// only delays its writes, store/guard.go). The held copy is for the
// process dying before that: this node's follower of its held subject
// (followOwnHeld) waits while the store is full, and acknowledges a held
// copy only once the store has the session's copy of the forward
// (fullHolds), so a restart applies what its store lacks. A claim that
// reads the session from the stream reads this node's held subject, as
// for any node. Share groups are not held this way: their members here
// have the message in memory only until the store writes it.
//
// Without a quorum for the held subject's partition the append fails and
// the forward is not confirmed, as before: the publisher's connection is
// closed, outcome unknown.

// fullHold is a forward whose copies here the store may not keep: what
// holding it for this node needs, and the hold once started.
type fullHold struct {
	k      originKey
	o      broker.Origin
	fwd    []byte // its forwarded form (wire.go); NATS gave the callback a copy of its own
	topic  string
	ticket broker.Ticket // the store's copies
	// deadline: its publisher's node waits forward_timeout from about
	// the forward's arrival, and the ack loop waits for the holds one
	// after the other: with one deadline each, holds failing for want
	// of a quorum would hold up every later confirmation by a
	// forward_timeout each.
	deadline time.Time
	sent     time.Time // when f was published
	f        jetstream.PubAckFuture
	err      error
}

// fullHolds remembers, for this node's follower of its held subject, the
// store ticket of each forward held here for a full store (by its copy
// name): a held copy that the session has in memory already is not
// applied again (HasMessage), and its acknowledgement must wait for the
// session's copy to be on disk. Bounded: past maxApplied entries no more
// are noted, and such a held copy is acknowledged once the store is
// healthy again (the write then follows within a moment).
type fullHolds struct {
	mu      sync.Mutex
	tickets map[uint64]broker.Ticket
	// holding: an episode of holding for a full store is on (logged at
	// its start, cleared by the follower once the store is healthy).
	holding atomic.Bool
}

func (h *fullHolds) note(copy uint64, t broker.Ticket) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.tickets == nil {
		h.tickets = map[uint64]broker.Ticket{}
	}
	if len(h.tickets) < maxApplied {
		h.tickets[copy] = max(h.tickets[copy], t)
	}
}

// ticket returns the store ticket noted for copy, 0 for none.
func (h *fullHolds) ticket(copy uint64) broker.Ticket {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.tickets[copy]
}

func (h *fullHolds) forget(copy uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.tickets, copy)
}

// noteFull prepares a's forward (k, rm, fwd) for a hold here should the
// store not keep its copies (ticket), and starts the hold at once when
// the store says it is full already; settleFull starts it otherwise (a
// write that found the disk full before the store's check did).
func (n *Node) noteFull(a *pendingAck, k originKey, rm *broker.RemoteMessage, fwd []byte, ticket broker.Ticket) {
	if n.sess == nil || ticket == 0 || k.id == 0 {
		return // nothing kept for a persistent session here, or no name to hold it by
	}
	a.full = &fullHold{k: k, o: rm.Origin, fwd: fwd, topic: rm.Topic, ticket: ticket,
		deadline: time.Now().Add(n.cfg.ForwardTimeout)}
	if n.sess.Healthy() != nil {
		n.holdFull(a.full)
	}
}

// holdFull appends h's forward to this node's held subject, for its
// plain subscriptions (see above for share groups).
func (n *Node) holdFull(h *fullHold) {
	s := n.sess
	js, err := s.readyJS()
	if err != nil {
		h.err = fmt.Errorf("held for this node's full store: %w", err)
		return
	}
	form, err := forwardWithGroups(h.fwd, nil, false)
	if err != nil {
		h.err = err
		return
	}
	m := nats.NewMsg(s.heldSubject(n.cfg.Node))
	m.Data = encodeHeld(h.k, form)
	m.Header.Set(jetstream.MsgIDHeader, holdMsgID(h.k, h.o, n.cfg.Node, false))
	n.full.note(h.k.copy(), h.ticket)
	h.sent = time.Now()
	if h.f = n.fault.silences(m); h.f != nil {
		n.log.Info("cluster: test fault: a hold for the full store left unanswered", "topic", h.topic)
	} else if h.f, err = js.PublishMsgAsync(m); err != nil {
		h.err = fmt.Errorf("held for this node's full store: %w", err)
		return
	}
	if n.full.holding.CompareAndSwap(false, true) {
		n.log.Warn("cluster: the store is full: forwarded messages for persistent sessions here are held for this node in its held subject and confirmed once replicated",
			"topic", h.topic, "origin", h.k.node)
	}
}

// settleFull decides a forward whose store wait failed with err: with a
// full store it waits for the forward's hold here (starting it if the
// store's check had not seen the disk full yet), until h.deadline. Any
// other failure, or a hold that failed, is returned. A replication
// backlog (sessions.Wait: too many ops waiting for a quorum) says "full"
// too, but the local store kept the copies, and the partition streams
// lack a quorum: the refusal stays (untested, and a hold would mostly
// lack the quorum as well).
func (n *Node) settleFull(h *fullHold, err error) error {
	if h == nil || !isDiskFull(err) {
		return err
	}
	if h.f == nil && h.err == nil {
		n.holdFull(h)
	}
	if h.err != nil {
		return fmt.Errorf("%w; and not held: %w", err, h.err)
	}
	if herr := n.settleFullHold(h); herr != nil {
		return fmt.Errorf("%w; and not held: %w", err, herr)
	}
	return nil
}

// fullRepublish is how long a hold for a full store waits for its answer
// before it is published again (settleFullHold).
const fullRepublish = time.Second

// settleFullHold waits for h's append, publishing it again (its Msg-Id
// keeps it once) when it fails or goes unanswered for fullRepublish,
// until h.deadline. The partition stream of this node's held subject may
// have its leader here: the full disk shuts this node's JetStream down
// ("out of File resources"), the append it took is never answered, and
// the other two replicas elect a leader about two seconds later. Seen:
// the first forward after the disk filled waited for that answer until
// "timeout waiting for ack", with its publisher's connection closed at
// the same moment (TestClusterDiskFullPersistent, 2 runs of 2).
func (n *Node) settleFullHold(h *fullHold) error {
	ctx, cancel := context.WithDeadline(n.ctx, h.deadline)
	defer cancel()
	// Counted from the publish, not from here: the ack loop settles
	// the holds one after the other, and those published while the
	// stream had no leader would each wait a full fullRepublish more.
	f, sent := h.f, h.sent
	for {
		var last error
		select {
		case <-f.Ok():
			return nil
		case last = <-f.Err():
			select {
			case <-ctx.Done():
				return fmt.Errorf("%w (%w)", ctx.Err(), last)
			case <-time.After(heldRetryWait):
			}
		case <-time.After(time.Until(sent.Add(fullRepublish))):
			last = errors.New("no answer")
		case <-ctx.Done():
			return ctx.Err()
		}
		js, err := n.sess.readyJS()
		if err != nil {
			return err
		}
		sent = time.Now()
		again, err := js.PublishMsgAsync(f.Msg())
		if err != nil {
			return fmt.Errorf("%w (before: %w)", err, last)
		}
		n.log.Debug("cluster: holding for the full store again", "topic", h.topic, "err", last)
		f = again
	}
}

// isDiskFull reports whether a store wait's err says the node's own
// store has no room (not a replication backlog).
func isDiskFull(err error) bool {
	return errors.Is(err, broker.ErrStoreFull) && !errors.Is(err, errNotReplicated)
}

// heldOrigin returns the origin a held message (encodeHeld) names.
func heldOrigin(b []byte) (originKey, bool) {
	r := reader{b: b}
	if r.byte() != heldVersion {
		return originKey{}, false
	}
	k := originKey{node: r.string(), inc: r.string(), id: r.uvarint()}
	return k, r.err == nil
}
