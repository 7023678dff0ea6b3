package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/packet"
)

// Confirmations of QoS 1/2 forwards. A forward is a NATS request whose
// reply subject is ackSubject.<origin node>.<sequence>; the receiving node
// does not answer each on its own subject but gathers the confirmations
// ready at the moment, per origin node, into one message on
// ackSubject.<origin node>:
//
//	version  byte
//	then per forward: sequence uvarint, taken byte (1 taken, 0 not)
//
// One message confirms a burst, and its subject is the same for every
// burst, so NATS's subject caches hit (a reply subject per request made
// every answer a cache miss on both servers: a fifth of the sending node's
// time). The per-request reply subject still exists for NATS's own answer
// when no node subscribes to the target's subject ("no responders", a node
// that left), which comes on it, and for answers of a node that confirms
// one by one.
const ackSubject = subjPrefix + ".ack"

// maxAckBatch bounds the confirmations gathered into one message.
const maxAckBatch = 1024

// ackResult is how a forward ended.
type ackResult byte

const (
	ackNotTaken ackResult = iota
	ackTaken
	ackNoResponders // no node subscribes to the target's subject: it left
	ackMalformed
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
}

// replies matches answers to the forward requests in flight, by sequence,
// so that requests can be sent in order and waited for later (nats.go's
// Request would block until the answer).
type replies struct {
	prefix string // ackSubject.<this node>
	seq    atomic.Uint64
	mu     sync.Mutex
	m      map[uint64]*pendingReply
}

func (r *replies) send(nc *nats.Conn, subj string, data []byte, deadline time.Time) (*pendingReply, error) {
	pr := &pendingReply{seq: r.seq.Add(1), ch: make(chan ackResult, 1), deadline: deadline, sentAt: time.Now()}
	r.mu.Lock()
	r.m[pr.seq] = pr
	r.mu.Unlock()
	if err := nc.PublishRequest(subj, r.prefix+"."+strconv.FormatUint(pr.seq, 36), data); err != nil {
		r.forget(pr)
		return nil, err
	}
	return pr, nil
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

// onReply handles an answer on a request's own subject: NATS's "no
// responders", or a node's single answer ([1, count] taken, [0] not).
func (r *replies) onReply(m *nats.Msg) {
	seq, err := strconv.ParseUint(m.Subject[strings.LastIndexByte(m.Subject, '.')+1:], 36, 64)
	if err != nil {
		return
	}
	res := ackMalformed
	switch {
	case len(m.Data) == 0 && m.Header.Get("Status") == "503":
		res = ackNoResponders
	case len(m.Data) > 0 && m.Data[0] == 1:
		res = ackTaken
	case len(m.Data) > 0 && m.Data[0] == 0:
		res = ackNotTaken
	}
	r.resolve(seq, res)
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
}

// await waits for pr's answer and counts it.
func (n *Node) await(ctx context.Context, pr *pendingReply) error {
	var res ackResult
	select {
	case res = <-pr.ch:
	case <-pr.gone:
		n.replies.forget(pr)
		return nil // the node went away: nothing to confirm
	case <-ctx.Done():
		n.replies.forget(pr)
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			n.counters.timedOut[pr.qos].Add(1)
		} else {
			n.counters.failed[pr.qos].Add(1) // this node is closing
		}
		return fmt.Errorf("node %s: %w", pr.node, ctx.Err())
	}
	switch res {
	case ackNoResponders:
		return nil // the node has left
	case ackMalformed:
		n.counters.failed[pr.qos].Add(1)
		return fmt.Errorf("node %s: %w", pr.node, errWire)
	case ackNotTaken:
		n.counters.failed[pr.qos].Add(1)
		return fmt.Errorf("node %s: %w", pr.node, errNotTaken)
	}
	n.counters.noteLatency(time.Since(pr.sentAt))
	return nil
}

// pendingAck is a QoS 1/2 message delivered here whose confirmation to the
// sending node waits for the store (persistent sessions' queued copies).
type pendingAck struct {
	msg    *nats.Msg
	n      int
	ticket broker.Ticket
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
			taken := byte(1)
			if err := n.srv.WaitDurable(a.ticket); err != nil {
				n.log.Error("cluster: store failed; not confirming a forwarded message", "err", err)
				taken = 0
			}
			origin, seq, ok := parseAckReply(a.msg.Reply)
			if !ok {
				// Not a Roost forward's reply subject: answer it
				// on its own.
				if err := a.msg.Respond(binary.AppendUvarint([]byte{taken}, uint64(a.n))); err != nil {
					n.log.Debug("cluster: confirming a forwarded message", "err", err)
				}
				continue
			}
			b := byOrigin[origin]
			if b == nil {
				b = []byte{wireVersion}
			}
			byOrigin[origin] = append(binary.AppendUvarint(b, seq), taken)
		}
		for origin, b := range byOrigin {
			if err := n.eng.nc.Publish(ackSubject+"."+origin, b); err != nil {
				n.log.Debug("cluster: confirming forwarded messages", "peer", origin, "err", err)
			}
			delete(byOrigin, origin)
		}
	}
}

// parseAckReply reads ackSubject.<node>.<seq>.
func parseAckReply(reply string) (origin string, seq uint64, ok bool) {
	rest, ok := strings.CutPrefix(reply, ackSubject+".")
	if !ok {
		return "", 0, false
	}
	origin, s, ok := strings.Cut(rest, ".")
	if !ok || origin == "" {
		return "", 0, false
	}
	seq, err := strconv.ParseUint(s, 36, 64)
	return origin, seq, err == nil
}
