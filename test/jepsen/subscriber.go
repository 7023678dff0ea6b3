package jepsen

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// sessionExpiry outlives any run: a persistent session must never expire
// on its own during one [MQTT-3.1.2-23].
const sessionExpiry = 24 * 3600

// subscriber receives on one filter, reconnecting to a random node every
// few seconds. It keeps its session's QoS 2 receive state across
// connections as a client must: a PUBLISH repeating a packet id that
// still awaits PUBREL is acknowledged, not delivered again [MQTT-4.3.3-10].
type subscriber struct {
	r     *run
	idx   int // in History.Subs
	info  Subscriber
	rng   *rand.Rand
	nodes []int

	ready    chan struct{} // closed at the first SUBACK
	drain    <-chan struct{}
	epoch    int
	conns    int
	created  bool // the persistent session exists on the broker
	awaiting map[uint16]bool
	// receiveMax, when not 0, is the Receive Maximum the subscriber
	// asks for: a small window keeps messages queued on the broker, so
	// that kills hit the queue as well as the inflight window.
	receiveMax uint16
}

// leaving is a connection left open on purpose: the next CONNECT with the
// same client id takes it over [MQTT-3.1.4-3], and only then is it closed
// (its unread packets dropped, as a dead client's would be).
type leaving struct {
	c    *conn
	pkts <-chan packet.Packet
}

func (l *leaving) close() {
	if l == nil {
		return
	}
	l.c.close()
	for range l.pkts {
	}
}

func (s *subscriber) persistent() bool { return s.info.Kind != Clean }

// loop connects, receives and leaves again until ctx ends.
func (s *subscriber) loop(ctx context.Context) {
	var prev *leaving
	defer func() { prev.close() }()
	for ctx.Err() == nil {
		node := s.nodes[s.rng.IntN(len(s.nodes))]
		clean := !s.persistent() || !s.created
		var expiry uint32
		if s.persistent() {
			expiry = sessionExpiry
		}
		cp := connectPacket(s.info.ID, clean, expiry)
		if s.receiveMax > 0 {
			cp.Properties.ReceiveMaximum = s.receiveMax
			cp.Properties.Set(packet.PropReceiveMaximum)
		}
		c, ack, err := dial(ctx, s.r.addrs[node], cp)
		prev.close()
		prev = nil
		if err != nil {
			s.r.h.event(s.info.ID, "connect to node %d: %v", node, err)
			s.r.backoff(ctx, s.rng)
			continue
		}
		s.conns++
		s.r.h.connected(ack.SessionPresent)
		subscribe := clean
		switch {
		case clean:
			s.epoch++
			s.awaiting = map[uint16]bool{}
		case !ack.SessionPresent:
			// The broker lost a session it should hold: what was queued
			// for it is gone (the checker counts it), and the client
			// discards its session state [MQTT-3.2.2-5].
			s.r.h.sessionLost(s.idx)
			s.epoch++
			s.awaiting = map[uint16]bool{}
			subscribe = true
		}
		prev = s.session(ctx, c, node, subscribe)
	}
}

// session receives on c until it is time to leave, c fails or ctx ends.
// It leaves with DISCONNECT, a bare close, or (returning c) by letting
// the next connection take this one over.
func (s *subscriber) session(ctx context.Context, c *conn, node int, subscribe bool) (takeover *leaving) {
	pkts := readPackets(c)
	defer func() {
		if takeover == nil {
			c.close()
			for range pkts {
			}
		}
	}()
	if subscribe {
		sub := &packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{
			{Filter: s.info.Filter, Options: packet.SubOptions{QoS: packet.QoS(s.info.QoS)}}}}
		if c.send(sub) != nil {
			return nil
		}
	}
	stay := time.NewTimer(s.r.cfg.Reconnect.pick(s.rng))
	defer stay.Stop()
	drain := s.drain
	for {
		select {
		case <-ctx.Done():
			c.disconnect()
			return nil
		case <-drain:
			// Stay on this connection from now on (clean subscribers
			// are stopped by ctx instead).
			stay.Stop()
			drain = nil
		case <-stay.C:
			switch s.rng.IntN(3) {
			case 0:
				c.disconnect()
			case 1:
				return &leaving{c, pkts}
			}
			return nil
		case pk, ok := <-pkts:
			if !ok || !s.handle(c, pk, node) {
				return nil
			}
		}
	}
}

// handle applies one packet; false when the connection must end.
func (s *subscriber) handle(c *conn, pk packet.Packet, node int) bool {
	switch pk := pk.(type) {
	case *packet.Suback:
		if len(pk.ReasonCodes) != 1 || pk.ReasonCodes[0] >= 0x80 {
			s.r.h.event(s.info.ID, "SUBACK %v from node %d", pk.ReasonCodes, node)
			return false
		}
		s.created = true
		s.r.h.subAcked(s.idx)
		select {
		case <-s.ready:
		default:
			close(s.ready)
		}
	case *packet.Publish:
		d := Delivery{Sub: s.idx, Epoch: s.epoch, Conn: s.conns, Node: node, Op: opOf(pk.Payload),
			QoS: uint8(pk.QoS), Dup: pk.Dup}
		switch pk.QoS {
		case 0:
			s.r.h.deliver(d, pk.Topic)
		case 1:
			s.r.h.deliver(d, pk.Topic)
			return c.send(&packet.Puback{PacketID: pk.PacketID}) == nil
		case 2:
			if !s.awaiting[pk.PacketID] {
				s.awaiting[pk.PacketID] = true
				s.r.h.deliver(d, pk.Topic)
			}
			return c.send(&packet.Pubrec{PacketID: pk.PacketID}) == nil
		}
	case *packet.Pubrel:
		delete(s.awaiting, pk.PacketID)
		return c.send(&packet.Pubcomp{PacketID: pk.PacketID}) == nil
	case *packet.Disconnect:
		s.r.h.event(s.info.ID, "DISCONNECT 0x%02x from node %d", byte(pk.ReasonCode), node)
		return false
	}
	return true
}
