package jepsen

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// reader reads retained topics: SUBSCRIBE, the retained message that
// answers it [MQTT-3.3.1-9] (Retain set: live messages to an existing
// subscription come with it clear [MQTT-3.3.1-12]), UNSUBSCRIBE. Each
// read is an operation on a register for the linearizability check.
type reader struct {
	r      *run
	id     string
	rng    *rand.Rand
	topics []string
}

// readTimeout: a read without an answer in this time is abandoned (and
// recorded nowhere: a read that never returned constrains nothing).
const readTimeout = 3 * time.Second

// emptyGrace is how long a read waits, after the PINGRESP that followed
// its SUBACK, for a retained message before it counts as empty. Roost
// offers the retained messages before it reads the next packet, so they
// come before the PINGRESP; the grace covers a server that sends them
// later.
const emptyGrace = time.Second

func (rd *reader) loop(ctx context.Context) {
	for ctx.Err() == nil {
		node := rd.r.cfg.RetainedNodes[rd.rng.IntN(len(rd.r.cfg.RetainedNodes))]
		c, _, err := dial(ctx, rd.r.addrs[node], connectPacket(rd.id, true, 0))
		if err != nil {
			rd.r.h.event(rd.id, "connect to node %d: %v", node, err)
			rd.r.backoff(ctx, rd.rng)
			continue
		}
		rd.session(ctx, c, node)
	}
}

func (rd *reader) session(ctx context.Context, c *conn, node int) {
	pkts := readPackets(c)
	defer func() {
		c.close()
		for range pkts {
		}
	}()
	leave := time.After(rd.r.cfg.Reconnect.pick(rd.rng))
	for {
		select {
		case <-ctx.Done():
			c.disconnect()
			return
		case <-leave:
			c.disconnect()
			return
		default:
		}
		if !rd.read(ctx, c, pkts, node) {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(50+rd.rng.IntN(150)) * time.Millisecond):
		}
	}
}

// read does one read; false when the connection must end.
//
// A retained topic is never empty (Run writes a first value to each), so
// a read that gets no retained message is a read of "nothing" only when
// the broker showed it was serving this connection meanwhile: it sent
// the SUBACK and answered a PINGREQ sent after it. The retained message
// goes out with the subscription [MQTT-3.3.1-9], so emptyGrace after
// that, the read is recorded as empty (Op -1) for the linearizability
// check. Otherwise the read is abandoned.
func (rd *reader) read(ctx context.Context, c *conn, pkts <-chan packet.Packet, node int) bool {
	topic := rd.topics[rd.rng.IntN(len(rd.topics))]
	rec := Read{Client: rd.id, Node: node, Topic: topic, Invoke: rd.r.h.now(), Op: -1}
	if c.send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{
		{Filter: topic, Options: packet.SubOptions{QoS: 1}}}}) != nil {
		return false
	}
	timeout := time.After(readTimeout)
	var empty <-chan time.Time // runs once the PINGRESP came
	for answered := false; !answered; {
		select {
		case <-ctx.Done():
			return false
		case <-timeout:
			rd.r.h.event(rd.id, "read of %s on node %d: no answer in %v", topic, node, readTimeout)
			return false
		case <-empty:
			rd.r.h.event(rd.id, "read of %s on node %d: no retained message %v after the SUBACK and a PINGRESP", topic, node, emptyGrace)
			rd.r.h.read(rec)
			answered = true
		case pk, ok := <-pkts:
			if !ok || !ackPublish(c, pk) {
				return false
			}
			switch p := pk.(type) {
			case *packet.Publish:
				if p.Retain && p.Topic == topic {
					rec.Op = opOf(p.Payload)
					rd.r.h.read(rec)
					answered = true
				}
			case *packet.Suback:
				if len(p.ReasonCodes) != 1 || p.ReasonCodes[0] >= 0x80 {
					// Refused (a cluster node that cannot bring its
					// retained messages up to date): no value read,
					// and no empty read either.
					rd.r.h.event(rd.id, "read of %s on node %d: SUBACK %v", topic, node, p.ReasonCodes)
					return true
				}
				if c.send(&packet.Pingreq{}) != nil {
					return false
				}
			case *packet.Pingresp:
				timeout, empty = nil, time.After(emptyGrace)
			}
		}
	}
	timeout = time.After(readTimeout)
	if c.send(&packet.Unsubscribe{PacketID: 2, Filters: []string{topic}}) != nil {
		return false
	}
	for {
		select {
		case <-ctx.Done():
			return false
		case <-timeout:
			return false
		case pk, ok := <-pkts:
			if !ok || !ackPublish(c, pk) {
				return false
			}
			if _, done := pk.(*packet.Unsuback); done {
				return true
			}
		}
	}
}

// ackPublish acknowledges pk if it is a QoS 1 PUBLISH; false if c failed.
func ackPublish(c *conn, pk packet.Packet) bool {
	if p, ok := pk.(*packet.Publish); ok && p.QoS == 1 {
		return c.send(&packet.Puback{PacketID: p.PacketID}) == nil
	}
	return true
}
