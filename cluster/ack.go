package cluster

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/packet"
)

// Confirmations of QoS 1/2 forwards. A forward carries a sequence number
// of its origin node (batch.go); the receiving node gathers the
// confirmations ready at the moment, per origin node, into one message on
// ackSubject.<origin node>:
//
//	version  byte
//	then per forward: sequence uvarint, taken byte (1 taken, 0 not)
//
// One message confirms a burst, on a subject that is the same for every
// burst, so NATS's subject caches hit (a NATS request per forward, answered
// on a reply subject of its own, missed them on both servers: a fifth of
// the sending node's time).
const ackSubject = subjPrefix + ".ack"

// maxAckBatch bounds the confirmations gathered into one message.
const maxAckBatch = 1024

// ackResult is how a forward ended.
type ackResult byte

const (
	ackNotTaken ackResult = iota
	ackTaken
)

// pendingReply is one forward request waiting for its node's answer.
// One is made per forward in flight (for a publish, one per node it goes
// to), so it is kept to 128 bytes, a size class of its own: what a
// publish's forward would hold for its node gone is its publish's, made
// once per publish (out), not a copy per forward (bench/jepsen/RESULTS.md
// "hot25": 288 bytes each with the copy).
type pendingReply struct {
	seq      uint64
	ch       chan ackResult // buffered: the answer
	deadline time.Time
	node     string
	gone     <-chan struct{}
	sentAt   time.Time
	// topic is set for a publish's forward (registerOut): it stays in
	// replies.m until its outcome is final (settledOut), and a claim
	// may wait for that (outTo).
	topic string
	// settled: made only when a claim waits for the forward (outTo),
	// closed when it leaves replies.m. Guarded by replies.mu.
	settled chan struct{}
	// out: a publish's forward, the publish it is one of. What it holds
	// for its node gone before answering (holdOut) is out's message for
	// out.targets[target] (one target per node: a cluster has far fewer
	// than 65,536), heldPlain if the routing held it for the node
	// already (holdForGone).
	out       *publishOut
	target    uint16
	heldPlain bool
	qos       packet.QoS
	// unanswerable (guarded by replies.mu): its node went away first
	// (await), a late answer no longer counts while it is held for that
	// node. late (replies.mu): registered to a node gone already, in
	// replies.late. held (Node.holdOutMu): holdOut made its hold,
	// out.gone[target]. taken (replies.mu): its node answered that it
	// took the message (resolve), read by a claim once settled is
	// closed (awaitOut).
	unanswerable, late, held, taken bool
}

// goneHold is how the hold a publish's forward made for its node gone
// before it answered went: made when the node is dropped, or by the
// routing of a later message held for the node, whichever comes first
// (holdOut), in the order the forwards were sent. Made in the publisher's
// wait, one held up behind an earlier message's confirmation landed after
// the later messages the routing had held for the node, and a session
// reading them got it after them [MQTT-4.6.0-5] (test/jepsen
// TestClusterFull seed 221, ps3: pub1#139 held 4.7 s after #140-#142;
// bench/jepsen/RESULTS.md "t221"). fs: its appends (none: nothing there
// wanted it); err: one failed.
type goneHold struct {
	fs  []jetstream.PubAckFuture
	err error
}

// replies matches answers to the forward requests in flight, by sequence,
// so that requests can be sent in order and waited for later (nats.go's
// Request would block until the answer).
//
// A publish's forward is also what a stream claim waits for (outTo): one
// out to the session's previous node whose outcome is not final yet. Its
// entry in m says so until then: answered, timed out, or held for its
// node gone (settledOut). Nothing more is kept per forward: the claims
// that wait are rare, the forwards many (docs/cluster.md, "What the
// publish path costs").
type replies struct {
	prefix string // ackSubject.<this node>
	seq    atomic.Uint64
	mu     sync.Mutex
	m      map[uint64]*pendingReply
	// late: the publishes' forwards registered to a node already gone
	// (its plan raced the drop), not held yet. holdOut looks through
	// all of m once per time a node is dropped (the forwards out then),
	// and through late for those after: a scan of every forward
	// in flight per message held for a dropped node cost O(in flight)
	// under mu, which every forward takes (bench/jepsen/RESULTS.md
	// "hot25"). Made on first use.
	late map[uint64]*pendingReply
}

// outTo returns the forwards out whose node and topic match, and makes
// their settled channels, closed once each outcome is final.
func (r *replies) outTo(match func(node, topic string) bool) []*pendingReply {
	r.mu.Lock()
	defer r.mu.Unlock()
	var prs []*pendingReply
	for _, pr := range r.m {
		if pr.topic != "" && match(pr.node, pr.topic) {
			if pr.settled == nil {
				pr.settled = make(chan struct{})
			}
			prs = append(prs, pr)
		}
	}
	return prs
}

// drop removes pr from m (under r.mu) and wakes a claim waiting for it.
func (r *replies) drop(pr *pendingReply) {
	if r.m[pr.seq] != pr {
		return
	}
	delete(r.m, pr.seq)
	if pr.late {
		delete(r.late, pr.seq)
		pr.late = false
	}
	if pr.settled != nil {
		close(pr.settled)
	}
}

// settledOut ends pr, a publish's forward, once its outcome is final:
// after await, and after the hold for its node if that node went away.
func (r *replies) settledOut(pr *pendingReply) {
	r.mu.Lock()
	r.drop(pr)
	r.mu.Unlock()
}

// register makes a sequence for a forward about to be sent.
func (r *replies) register(deadline time.Time) *pendingReply {
	return r.add(&pendingReply{deadline: deadline})
}

// registerOut makes a sequence for a publish's forward on topic to node
// about to be sent, its publish's targets[target] (out), the message held
// for node already or not (heldPlain); settledOut ends it.
func (r *replies) registerOut(deadline time.Time, node string, gone <-chan struct{}, qos packet.QoS, topic string, out *publishOut, target int, heldPlain bool) *pendingReply {
	return r.add(&pendingReply{deadline: deadline, node: node, gone: gone, qos: qos, topic: topic,
		out: out, target: uint16(target), heldPlain: heldPlain})
}

// goneOut returns, in the order they were sent, the publishes' forwards
// out to node, gone, that were neither answered nor held for it yet
// (holdOut; under Node.holdOutMu): with all, every one in flight; without,
// only those registered to node gone already (late). An answer coming
// later no longer counts: they are held.
func (r *replies) goneOut(node string, all bool) []*pendingReply {
	r.mu.Lock()
	defer r.mu.Unlock()
	from := r.late
	if all {
		from = r.m
	}
	var prs []*pendingReply
	for _, pr := range from {
		if pr.topic == "" || pr.node != node || pr.held {
			continue
		}
		select {
		case <-pr.gone:
			pr.unanswerable = true
			if pr.late {
				delete(r.late, pr.seq)
				pr.late = false
			}
			prs = append(prs, pr)
		default:
		}
	}
	slices.SortFunc(prs, func(a, b *pendingReply) int { return cmp.Compare(a.seq, b.seq) })
	return prs
}

func (r *replies) add(pr *pendingReply) *pendingReply {
	pr.seq, pr.ch, pr.sentAt = r.seq.Add(1), make(chan ackResult, 1), time.Now()
	r.mu.Lock()
	r.m[pr.seq] = pr
	if pr.topic != "" && isGone(pr.gone) {
		// Under mu: a scan of m made after the close has it, or this
		// saw the close (goneOut).
		if r.late == nil {
			r.late = map[uint64]*pendingReply{}
		}
		r.late[pr.seq] = pr
		pr.late = true
	}
	r.mu.Unlock()
	return pr
}

// isGone reports whether gone (a node's, goneCh) is closed.
func isGone(gone <-chan struct{}) bool {
	select {
	case <-gone:
		return true
	default:
		return false
	}
}

// resolve ends the request seq with res, if it is still waited for. An
// answer is final: a claim waiting for the forward need not wait for its
// publisher's wait to see it.
func (r *replies) resolve(seq uint64, res ackResult) {
	r.mu.Lock()
	pr := r.m[seq]
	if pr != nil && pr.unanswerable {
		pr = nil
	}
	if pr != nil {
		pr.taken = res == ackTaken
		r.drop(pr)
	}
	r.mu.Unlock()
	if pr != nil {
		pr.ch <- res
	}
}

// onAcks handles a batch of confirmations.
func (r *replies) onAcks(m *nats.Msg) {
	rd := reader{b: m.Data}
	if rd.byte() != wireVersion {
		return // a later Roost's form: its requests time out rather than being misread
	}
	for len(rd.b) > 0 && rd.err == nil {
		seq, taken := rd.uvarint(), rd.byte()
		if rd.err == nil {
			r.resolve(seq, ackResult(taken&1))
		}
	}
}

// forget stops waiting for pr's answer. A publish's forward whose node
// went away (gone) stays out, unanswerable, until it was held for that
// node (settledOut); otherwise its outcome is final here.
func (r *replies) forget(pr *pendingReply, gone bool) {
	r.mu.Lock()
	if gone && pr.topic != "" {
		pr.unanswerable = true
	} else {
		r.drop(pr)
	}
	r.mu.Unlock()
}

// sweep forgets requests past their deadline whose wait was never called
// (their connection died first, say).
func (r *replies) sweep(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, pr := range r.m {
		if now.After(pr.deadline.Add(time.Second)) {
			r.drop(pr)
		}
	}
}

// errGone is a forward's outcome when its node was dropped (its routes
// closed, or silent) before it answered: the node may have taken the
// message into a persistent session's replicated record (a survivor
// serves it from there) or not, or may take it on its return, so it is
// neither delivered for sure nor lost for sure.
var errGone = errors.New("cluster: peer went away before confirming the message (outcome unknown)")

// await waits for pr's answer and counts it. A node that goes away before
// its answer makes the outcome unknown (errGone): acknowledging the
// message would lose it whenever it was for a persistent session there
// that had not recorded it yet, since a survivor serves that session from
// its replicated record (a PUBACK says the server has accepted ownership
// of the message [MQTT-4.3.2-4]). The publisher's connection is then
// closed and the client sends again, as after a forward that timed out,
// unless Forward can hold the message for the node's persistent sessions
// (held.go).
func (n *Node) await(ctx context.Context, pr *pendingReply) error {
	var res ackResult
	select {
	case res = <-pr.ch:
	case <-pr.gone:
		n.replies.forget(pr, true)
		select {
		case res = <-pr.ch: // answered before its drop
		default:
			n.counters.failed[pr.qos].Add(1)
			return fmt.Errorf("node %s: %w", pr.node, errGone)
		}
	case <-ctx.Done():
		n.replies.forget(pr, false)
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			n.counters.timedOut[pr.qos].Add(1)
		} else {
			n.counters.failed[pr.qos].Add(1) // this node is closing
		}
		return fmt.Errorf("node %s: %w", pr.node, ctx.Err())
	}
	if res != ackTaken {
		n.counters.failed[pr.qos].Add(1)
		return fmt.Errorf("node %s: %w", pr.node, errNotTaken)
	}
	n.counters.noteLatency(time.Since(pr.sentAt))
	return nil
}

// pendingAck is a QoS 1/2 message delivered here whose confirmation to the
// sending node waits for the store (persistent sessions' queued copies).
type pendingAck struct {
	origin string
	seq    uint64
	taken  bool // false: it could not be read
	n      int  // sessions it went to
	ticket broker.Ticket
	// copy: its copy name (originKey.copy), for what a disown kept of
	// it (keeplate.go); 0 for none.
	copy uint64
	// keeps: its copies kept for disowned copies of sessions here
	// and its hold for an ended copy (keep.go), which it waits for
	// too; keepErr: one could not be appended, or a resend's share
	// group could not be claimed (ClaimGroup).
	keeps   []jetstream.PubAckFuture
	keepErr error
	// full: its hold here should the store's disk be full
	// (diskhold.go); nil when no copy here waits for the store.
	full *fullHold
}

// ackLoop confirms forwarded messages once the store has their copies,
// gathering what is ready into one message per origin node.
func (n *Node) ackLoop() {
	defer n.wg.Done()
	batch := make([]pendingAck, 0, maxAckBatch)
	byOrigin := make(map[string][]byte)
	for {
		select {
		case <-n.ctx.Done():
			return
		case a := <-n.acks:
			batch = append(batch[:0], a)
		}
		for more := true; more && len(batch) < maxAckBatch; {
			select {
			case a := <-n.acks:
				batch = append(batch, a)
			default:
				more = false
			}
		}
		for _, a := range batch {
			taken := byte(0)
			if a.taken {
				taken = 1
				if err := n.settleFull(a.full, n.srv.WaitDurable(a.ticket)); err != nil {
					n.log.Error("cluster: store failed; not confirming a forwarded message", "err", err)
					taken = 0
				} else if err := errors.Join(a.keepErr, n.settleKept(a.keeps), n.lateKept(a.copy)); err != nil {
					n.log.Warn("cluster: a message kept or held here for a disowned or ended copy not appended; not confirming it", "err", err)
					taken = 0
				}
			}
			b := byOrigin[a.origin]
			if b == nil {
				b = []byte{wireVersion}
			}
			byOrigin[a.origin] = append(binary.AppendUvarint(b, a.seq), taken)
		}
		for origin, b := range byOrigin {
			if err := n.eng.nc.Publish(ackSubject+"."+origin, b); err != nil {
				n.log.Debug("cluster: confirming forwarded messages", "peer", origin, "err", err)
			}
			delete(byOrigin, origin)
		}
	}
}
