package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
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
type pendingReply struct {
	seq      uint64
	ch       chan ackResult // buffered: the answer
	deadline time.Time
	node     string
	gone     <-chan struct{}
	sentAt   time.Time
	qos      packet.QoS
	// topic and settled are set for a publish's forward (trackOut):
	// settled closes once its outcome is final, re-held for its node
	// if that node went away first (settle).
	topic   string
	settled chan struct{}
	once    sync.Once
}

// settle marks pr's outcome final (answered, timed out, or held for its
// gone node).
func (pr *pendingReply) settle() {
	if pr.settled != nil {
		pr.once.Do(func() { close(pr.settled) })
	}
}

// replies matches answers to the forward requests in flight, by sequence,
// so that requests can be sent in order and waited for later (nats.go's
// Request would block until the answer).
type replies struct {
	prefix string // ackSubject.<this node>
	seq    atomic.Uint64
	mu     sync.Mutex
	m      map[uint64]*pendingReply
	// out: publishes' forwards whose outcome is not final yet (trackOut),
	// by sequence; a forward answered leaves m at once, but one whose
	// node went away stays here until it was held for that node.
	out map[uint64]*pendingReply
}

// trackOut keeps pr, a forward of a publish on topic, among the forwards
// out until pr.settle (or its deadline: sweep).
func (r *replies) trackOut(pr *pendingReply, topic string) {
	pr.topic, pr.settled = topic, make(chan struct{})
	r.mu.Lock()
	if r.out == nil {
		r.out = map[uint64]*pendingReply{}
	}
	r.out[pr.seq] = pr
	r.mu.Unlock()
}

// settled forgets pr among the forwards out and settles it.
func (r *replies) settled(pr *pendingReply) {
	r.mu.Lock()
	delete(r.out, pr.seq)
	r.mu.Unlock()
	pr.settle()
}

// outTo returns the forwards out whose node and topic match.
func (r *replies) outTo(match func(node, topic string) bool) []*pendingReply {
	r.mu.Lock()
	defer r.mu.Unlock()
	var prs []*pendingReply
	for _, pr := range r.out {
		if match(pr.node, pr.topic) {
			prs = append(prs, pr)
		}
	}
	return prs
}

// register makes a sequence for a forward about to be sent.
func (r *replies) register(deadline time.Time) *pendingReply {
	pr := &pendingReply{seq: r.seq.Add(1), ch: make(chan ackResult, 1), deadline: deadline, sentAt: time.Now()}
	r.mu.Lock()
	r.m[pr.seq] = pr
	r.mu.Unlock()
	return pr
}

// resolve ends the request seq with res, if it is still waited for.
func (r *replies) resolve(seq uint64, res ackResult) {
	r.mu.Lock()
	pr := r.m[seq]
	delete(r.m, seq)
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

func (r *replies) forget(pr *pendingReply) {
	r.mu.Lock()
	delete(r.m, pr.seq)
	r.mu.Unlock()
}

// sweep forgets requests past their deadline whose wait was never called
// (their connection died first, say).
func (r *replies) sweep(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, pr := range r.m {
		if now.After(pr.deadline.Add(time.Second)) {
			delete(r.m, k)
		}
	}
	for k, pr := range r.out {
		if now.After(pr.deadline.Add(time.Second)) {
			delete(r.out, k)
			pr.settle()
		}
	}
}

// errGone is a forward's outcome when its node's routes closed before it
// answered: the node may have taken the message into a persistent
// session's replicated record (a survivor serves it from there) or not,
// so it is neither delivered for sure nor lost for sure.
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
		n.replies.forget(pr)
		select {
		case res = <-pr.ch: // answered before its routes closed
		default:
			n.counters.failed[pr.qos].Add(1)
			return fmt.Errorf("node %s: %w", pr.node, errGone)
		}
	case <-ctx.Done():
		n.replies.forget(pr)
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
				} else if err := errors.Join(a.keepErr, n.settleKept(a.keeps)); err != nil {
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
