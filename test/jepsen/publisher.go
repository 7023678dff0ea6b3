package jepsen

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// publisher sends QoS 1/2 messages with unique payloads at a steady rate,
// each connection to a random node. Retained writers are publishers too
// (Retain set, QoS 1, topics r/N).
type publisher struct {
	r       *run
	id      string
	rng     *rand.Rand
	topics  []string
	qos     []packet.QoS
	retain  bool
	every   time.Duration
	conns   int
	started int   // publishes invoked, for Seq
	nodes   []int // the nodes it connects to
	// persistent publishers keep a session (Clean Start 0) and, on a
	// connection that resumes it, send their unacknowledged PUBLISHes
	// again (DUP) and the PUBRELs of the PUBRECs they had [MQTT-4.4.0-1]:
	// the broker must not deliver a QoS 2 message twice because its
	// publisher had to send it twice [MQTT-4.3.3-10], across a kill -9
	// or a move to another node.
	persistent bool
	created    bool // the broker has the persistent session
	out        map[uint16]*inflight
	free       []uint16
}

// loop runs connections until ctx ends; publishes still unacknowledged
// then are unknown.
func (p *publisher) loop(ctx context.Context) {
	p.reset()
	defer p.reset()
	var prev *leaving
	defer func() { prev.close() }()
	for ctx.Err() == nil {
		node := p.nodes[p.rng.IntN(len(p.nodes))]
		var expiry uint32
		if p.persistent {
			expiry = sessionExpiry
		}
		clean := !p.persistent || !p.created
		c, ack, err := dial(ctx, p.r.addrs[node], connectPacket(p.id, clean, expiry))
		prev.close()
		prev = nil
		if err != nil {
			p.r.h.event(p.id, "connect to node %d: %v", node, err)
			p.r.backoff(ctx, p.rng)
			continue
		}
		if p.persistent && !clean && !ack.SessionPresent {
			p.r.h.pubSessionLost(p.id, node, len(p.out))
			p.reset()
		}
		p.created = p.persistent
		p.conns++
		prev = p.session(ctx, c, node)
		if !p.persistent {
			p.reset()
		}
	}
}

// reset forgets the session: unacknowledged publishes become unknown and
// every packet id is free.
func (p *publisher) reset() {
	for _, f := range p.out {
		p.r.h.complete(f.op, Unknown, 0)
	}
	w := p.r.cfg.Window
	p.out, p.free = map[uint16]*inflight{}, make([]uint16, 0, w)
	for id := w; id >= 1; id-- {
		p.free = append(p.free, uint16(id))
	}
}

// inflight is one unacknowledged publish: its operation and PUBLISH, and
// for QoS 2 whether PUBREC came (then only PUBCOMP is awaited).
type inflight struct {
	op       int
	pub      *packet.Publish
	sent     time.Time
	released bool
}

// resend sends what the resumed session still has in flight, in the
// order the packets were first sent [MQTT-4.6.0-1]; false when c failed.
func (p *publisher) resend(c *conn) bool {
	ids := make([]uint16, 0, len(p.out))
	for id := range p.out {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b uint16) int { return p.out[a].op - p.out[b].op })
	var again []int // operations whose PUBLISH is sent again
	for _, id := range ids {
		f := p.out[id]
		f.sent = time.Now()
		var pk packet.Packet = &packet.Pubrel{PacketID: id}
		if !f.released {
			dup := *f.pub
			dup.Dup = true
			pk = &dup
			again = append(again, f.op)
		}
		if c.send(pk) != nil {
			return false
		}
	}
	p.r.h.resent(len(ids), again)
	return true
}

// session publishes on c until it is time to leave, ctx ends or c fails.
// A persistent publisher leaves half the time without waiting for its
// acknowledgements, returning c for its next CONNECT to take over: the
// broker must apply what c had sent before (or not at all) and recognise
// the QoS 2 packet ids resent with DUP on the new connection.
func (p *publisher) session(ctx context.Context, c *conn, node int) (takeover *leaving) {
	pkts := readPackets(c)
	defer func() {
		if takeover == nil {
			c.close()
			for range pkts { // the reader goroutine ends once c is closed
			}
		}
	}()
	if !p.resend(c) {
		return nil
	}
	out := p.out
	tick := time.NewTicker(p.every)
	defer tick.Stop()
	check := time.NewTicker(200 * time.Millisecond)
	defer check.Stop()
	// A publisher leaves after a while (like the subscribers, so that
	// faults hit publishers on every node) or when ctx ends: it stops
	// sending and waits a little for the acknowledgements of what it
	// sent, so that leaving does not make them unknown.
	stopping := ctx.Done()
	leave := time.After(p.r.cfg.Reconnect.pick(p.rng) * 2)
	var stopBy <-chan time.Time
	stop := func() bool {
		stopping, leave, tick.C = nil, nil, nil
		stopBy = time.After(2 * time.Second)
		if len(out) == 0 {
			c.disconnect()
			return true
		}
		return false
	}
	for {
		select {
		case <-stopping:
			if stop() {
				return
			}
		case <-leave:
			if p.persistent && p.rng.IntN(2) == 0 {
				return &leaving{c, pkts}
			}
			if stop() {
				return
			}
		case <-stopBy:
			return
		case pk, ok := <-pkts:
			if !ok {
				p.r.h.event(p.id, "connection to node %d lost with %d unacknowledged", node, len(out))
				return
			}
			if id, done := p.ack(c, pk, out); done {
				p.free = append(p.free, id)
				if stopBy != nil && len(out) == 0 {
					c.disconnect()
					return
				}
			}
		case <-tick.C:
			if len(p.free) == 0 {
				continue
			}
			id := p.free[len(p.free)-1]
			p.free = p.free[:len(p.free)-1]
			if !p.publish(c, id, node, out) {
				return
			}
		case <-check.C:
			for _, f := range out {
				if time.Since(f.sent) > p.r.cfg.OpTimeout {
					p.r.h.event(p.id, "no acknowledgement from node %d within %v: closing", node, p.r.cfg.OpTimeout)
					return
				}
			}
		}
	}
}

// publish invokes one operation on packet id id; false when c failed.
func (p *publisher) publish(c *conn, id uint16, node int, out map[uint16]*inflight) bool {
	topic := p.topics[p.rng.IntN(len(p.topics))]
	qos := p.qos[p.rng.IntN(len(p.qos))]
	op, payload := p.r.h.invoke(PubOp{Client: p.id, Conn: p.conns, Node: node, Topic: topic,
		QoS: uint8(qos), Retain: p.retain, Seq: p.started})
	p.started++
	pub := &packet.Publish{Topic: topic, QoS: qos, Retain: p.retain, PacketID: id, Payload: payload}
	out[id] = &inflight{op: op, pub: pub, sent: time.Now()}
	return c.send(pub) == nil
}

// ack applies an acknowledgement; done when packet id is free again.
func (p *publisher) ack(c *conn, pk packet.Packet, out map[uint16]*inflight) (id uint16, done bool) {
	switch pk := pk.(type) {
	case *packet.Puback:
		if f := out[pk.PacketID]; f != nil {
			p.r.h.complete(f.op, status(pk.ReasonCode), uint8(pk.ReasonCode))
			delete(out, pk.PacketID)
			return pk.PacketID, true
		}
	case *packet.Pubrec:
		f := out[pk.PacketID]
		if f == nil {
			return 0, false
		}
		// PUBREC is the acknowledgement: from here the broker owns the
		// message [MQTT-4.3.3]; a failure code ends the exchange.
		p.r.h.complete(f.op, status(pk.ReasonCode), uint8(pk.ReasonCode))
		if pk.ReasonCode >= 0x80 {
			delete(out, pk.PacketID)
			return pk.PacketID, true
		}
		f.released = true
		c.send(&packet.Pubrel{PacketID: pk.PacketID})
	case *packet.Pubcomp:
		if f := out[pk.PacketID]; f != nil && f.released {
			delete(out, pk.PacketID)
			return pk.PacketID, true
		}
	case *packet.Disconnect:
		p.r.h.event(p.id, "DISCONNECT 0x%02x from the broker", byte(pk.ReasonCode))
	}
	return 0, false
}

func status(rc packet.ReasonCode) Status {
	if rc >= 0x80 {
		return Fail
	}
	return OK
}

// readPackets reads c's packets into a channel, closed when c fails or is
// closed, so that the owner can wait on packets, timers and ctx at once.
func readPackets(c *conn) <-chan packet.Packet {
	ch := make(chan packet.Packet, 64)
	go func() {
		defer close(ch)
		for {
			p, err := c.read(0)
			if err != nil {
				return
			}
			ch <- p
		}
	}()
	return ch
}

func topicNames(prefix string, n int) []string {
	s := make([]string, n)
	for i := range s {
		s[i] = fmt.Sprintf("%s/%d", prefix, i)
	}
	return s
}
