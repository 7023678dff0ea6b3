package cluster

import (
	"encoding/binary"
	"sync"
)

// Forwards to one node travel in batches: whatever was forwarded to it
// while the previous batch was being sent goes as one NATS message on
// pubSubject.<node>. Each NATS message costs a parse and a subject lookup
// on both servers, a route frame and a callback on the receiving node; one
// per batch rather than one per message is what lets cross-node fan-in go
// faster than one message per round of those. Under light load a batch is
// one message, sent as soon as the sender goroutine runs.
//
// A batch:
//
//	version  byte (batchVersion)
//	origin   string   the sending node (where confirmations go)
//	inc      string   its incarnation
//	then per message:
//	  seq    uvarint  the forward's sequence (0: QoS 0, no confirmation)
//	  id     uvarint  the message's id on its origin (0: none), which
//	                  with origin and inc names it cluster-wide (held.go)
//	  length uvarint, then a forwarded message (wire.go)
//
// One node's batches leave in order on one connection and are delivered
// in order, so each publisher's order holds.
const batchVersion = 3

// maxBatch bounds a batch's bytes (a single larger message goes alone).
const maxBatch = 256 << 10

// sender gathers the forwards to one node and sends them.
type sender struct {
	subj string
	wake chan struct{}
	mu   sync.Mutex
	// full are batches ready to send, cur the one being filled, both
	// starting with the batch header; seqs are the sequences each
	// carries, for failing them when a send fails.
	full     [][]byte
	fullSeqs [][]uint64
	cur      []byte
	curSeqs  []uint64
	header   []byte
}

// senderFor returns the sender for node, starting its goroutine on first
// use (not once Close has begun).
func (n *Node) senderFor(node string) *sender {
	n.sendersMu.Lock()
	defer n.sendersMu.Unlock()
	s := n.senders[node]
	if s == nil {
		s = &sender{subj: pubSubject + "." + node, wake: make(chan struct{}, 1),
			header: appendString(appendString([]byte{batchVersion}, n.cfg.Node), n.inc)}
		if n.sendersClosed {
			// The node is closing: what is added is never sent, and
			// the waits for it end with the node's context.
			return s
		}
		n.senders[node] = s
		n.wg.Add(1)
		go n.sendLoop(s)
	}
	return s
}

// add queues one forwarded message (fwd, from encodeForward) with its
// sequence (0 for none) and no id.
func (s *sender) add(seq uint64, fwd []byte) { s.addID(seq, 0, fwd) }

// addID is add with the message's id on this node (broker.Message.ID).
func (s *sender) addID(seq, id uint64, fwd []byte) {
	s.mu.Lock()
	if len(s.cur) > len(s.header) && len(s.cur)+len(fwd)+20 > maxBatch {
		s.full, s.fullSeqs = append(s.full, s.cur), append(s.fullSeqs, s.curSeqs)
		s.cur, s.curSeqs = nil, nil
	}
	if s.cur == nil {
		s.cur = append(make([]byte, 0, min(maxBatch, len(s.header)+len(fwd)+4096)), s.header...)
	}
	s.cur = binary.AppendUvarint(s.cur, seq)
	s.cur = binary.AppendUvarint(s.cur, id)
	s.cur = binary.AppendUvarint(s.cur, uint64(len(fwd)))
	s.cur = append(s.cur, fwd...)
	if seq != 0 {
		s.curSeqs = append(s.curSeqs, seq)
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// take returns the batches to send, in order.
func (s *sender) take() ([][]byte, [][]uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, q := s.full, s.fullSeqs
	if s.cur != nil {
		b, q = append(b, s.cur), append(q, s.curSeqs)
	}
	s.full, s.fullSeqs, s.cur, s.curSeqs = nil, nil, nil, nil
	return b, q
}

// sendLoop sends s's batches until the node closes. A batch NATS refuses
// (the connection closed) fails its confirmations at once.
func (n *Node) sendLoop(s *sender) {
	defer n.wg.Done()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-s.wake:
		}
		batches, seqs := s.take()
		for i, b := range batches {
			if err := n.eng.nc.Publish(s.subj, b); err != nil {
				n.log.Debug("cluster: forwarding failed", "subject", s.subj, "err", err)
				for _, seq := range seqs[i] {
					n.replies.resolve(seq, ackNotTaken)
				}
			}
		}
	}
}

// forEachForward calls f for each message of a batch; it reports whether
// the batch was well formed up to its end.
func forEachForward(b []byte, f func(origin originKey, seq uint64, fwd []byte)) bool {
	r := reader{b: b}
	if r.byte() != batchVersion {
		return false
	}
	origin := originKey{node: r.string(), inc: r.string()}
	for len(r.b) > 0 && r.err == nil {
		seq, id, n := r.uvarint(), r.uvarint(), r.uvarint()
		if r.err != nil || n > uint64(len(r.b)) {
			return false
		}
		origin.id = id
		f(origin, seq, r.b[:n])
		r.b = r.b[n:]
	}
	return r.err == nil
}
