package broker

import (
	"sync"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// Message is an application message as the broker routes and stores it.
// It is immutable once routed: every subscriber shares one Message.
type Message struct {
	// ID identifies the message to a Store, which keeps one copy of the
	// body however many sessions it is queued for.
	ID      uint64
	Topic   string
	Payload []byte
	QoS     packet.QoS
	Retain  bool
	// Props are the PUBLISH properties to forward: Payload Format
	// Indicator, Content Type, Response Topic, Correlation Data and User
	// Properties, in order [MQTT-3.3.2-17/18]. Topic Alias, Subscription
	// Identifiers and Message Expiry are per delivery and not kept here.
	Props packet.Properties
	// Expires is when the MQTT 5 Message Expiry Interval runs out; zero
	// means never.
	Expires time.Time
	// From is the publishing client's id (empty for the server's own
	// messages), for No Local.
	From string
	// Created is when the broker received it.
	Created time.Time

	// shareWire says the message goes to several sessions, so its wire
	// forms are worth caching (set before the message is shared).
	shareWire bool
	wireMu    sync.Mutex
	wire      []wireForm
}

// wireForm is one encoded PUBLISH of a message, shared by every subscriber
// that needs exactly these bytes; QoS 1/2 copies get their packet id patched
// in at pidAt.
type wireForm struct {
	v      packet.Version
	qos    packet.QoS
	retain bool
	b      []byte
	pidAt  int
}

// wireFor returns the cached encoding of m for (v, qos, retain) without
// per-delivery properties, encoding it on first use.
func (m *Message) wireFor(v packet.Version, qos packet.QoS, retain bool) (wireForm, error) {
	m.wireMu.Lock()
	defer m.wireMu.Unlock()
	for _, f := range m.wire {
		if f.v == v && f.qos == qos && f.retain == retain {
			return f, nil
		}
	}
	p := packet.Publish{QoS: qos, Retain: retain, Topic: m.Topic, Payload: m.Payload, Properties: m.Props}
	if qos > 0 {
		p.PacketID = 1 // patched per delivery
	}
	b, err := p.Encode(nil, v)
	if err != nil {
		return wireForm{}, err
	}
	h, err := packet.ParseFixedHeader(b)
	if err != nil {
		return wireForm{}, err
	}
	f := wireForm{v: v, qos: qos, retain: retain, b: b, pidAt: h.HeaderLen + 2 + len(m.Topic)}
	m.wire = append(m.wire, f)
	return f, nil
}

func (m *Message) expired(now time.Time) bool {
	return !m.Expires.IsZero() && !now.Before(m.Expires)
}

// newMessage builds a Message from a client PUBLISH.
func (s *Server) newMessage(p *packet.Publish, from string) *Message {
	now := time.Now()
	m := &Message{ID: s.msgID.Add(1), Topic: p.Topic, Payload: p.Payload, QoS: p.QoS, Retain: p.Retain, From: from, Created: now}
	m.Props = p.Properties
	m.Props.Clear(packet.PropTopicAlias)
	m.Props.TopicAlias = 0
	m.Props.Clear(packet.PropSubscriptionID)
	m.Props.SubscriptionIDs = nil
	if m.Props.Has(packet.PropMessageExpiry) {
		m.Expires = now.Add(time.Duration(m.Props.MessageExpiry) * time.Second)
		m.Props.Clear(packet.PropMessageExpiry)
		m.Props.MessageExpiry = 0
	}
	return m
}

// writePublish encodes one PUBLISH of msg for this connection and appends
// it to the output. It reports false when the message was discarded: QoS 0
// for a slow consumer, expired, or larger than the client's Maximum Packet
// Size [MQTT-3.1.2-25]. The caller holds the session lock (which guards the
// outbound topic aliases).
func (c *conn) writePublish(msg *Message, qos packet.QoS, retain bool, subIDs []uint32, pid uint16, dup bool) bool {
	if msg.shareWire && !dup && len(subIDs) == 0 && msg.Expires.IsZero() && (c.version != packet.V5 || c.aliasMaxOut == 0) {
		if f, err := msg.wireFor(c.version, qos, retain); err == nil {
			return c.writeShared(msg, f, pid)
		}
	}
	p := packet.Publish{Dup: dup, QoS: qos, Retain: retain, Topic: msg.Topic, PacketID: pid, Payload: msg.Payload}
	newAlias := false
	if c.version == packet.V5 {
		p.Properties = msg.Props
		if !msg.Expires.IsZero() {
			left := time.Until(msg.Expires)
			if left <= 0 {
				if !dup {
					c.sess.noteDrop(DropExpired)
					return false
				}
				// Onward delivery already started: a resend must go out
				// [MQTT-3.3.2-5].
				left = time.Second
			}
			p.Properties.MessageExpiry = uint32((left + time.Second - 1) / time.Second)
			p.Properties.Set(packet.PropMessageExpiry)
		}
		if len(subIDs) > 0 {
			p.Properties.SubscriptionIDs = subIDs
			p.Properties.Set(packet.PropSubscriptionID)
		}
		if c.aliasMaxOut > 0 {
			if a, ok := c.aliasOut[msg.Topic]; ok {
				p.Topic = ""
				p.Properties.TopicAlias = a
				p.Properties.Set(packet.PropTopicAlias)
			} else if c.nextAliasOut < c.aliasMaxOut {
				c.nextAliasOut++
				if c.aliasOut == nil {
					c.aliasOut = make(map[string]uint16)
				}
				c.aliasOut[msg.Topic] = c.nextAliasOut
				p.Properties.TopicAlias = c.nextAliasOut
				p.Properties.Set(packet.PropTopicAlias)
				newAlias = true
			}
		}
	}
	c.outMu.Lock()
	defer c.outMu.Unlock()
	if c.dead {
		return true // inflight stays and is resent on the next connection
	}
	if qos == 0 && len(c.out) > maxOutBuffered {
		c.undoAlias(msg.Topic, newAlias)
		c.sess.noteDrop(DropSlowConsumer)
		return false
	}
	start := len(c.out)
	var err error
	c.out, err = p.Encode(c.out, c.version)
	if err != nil || (c.maxOut > 0 && len(c.out)-start > int(c.maxOut)) {
		c.out = c.out[:start]
		c.undoAlias(msg.Topic, newAlias)
		c.sess.noteDrop(DropTooLarge)
		return false
	}
	c.noteSent(msg, qos)
	c.startFlushLocked()
	return true
}

func (c *conn) undoAlias(topic string, assigned bool) {
	if assigned {
		delete(c.aliasOut, topic)
		c.nextAliasOut--
	}
}

// writeShared appends a cached wire form, patching in the packet id.
func (c *conn) writeShared(msg *Message, f wireForm, pid uint16) bool {
	c.outMu.Lock()
	defer c.outMu.Unlock()
	if c.dead {
		return true
	}
	if f.qos == 0 && len(c.out) > maxOutBuffered {
		c.sess.noteDrop(DropSlowConsumer)
		return false
	}
	if c.maxOut > 0 && len(f.b) > int(c.maxOut) {
		c.sess.noteDrop(DropTooLarge)
		return false
	}
	start := len(c.out)
	c.out = append(c.out, f.b...)
	if f.qos > 0 {
		c.out[start+f.pidAt] = byte(pid >> 8)
		c.out[start+f.pidAt+1] = byte(pid)
	}
	c.noteSent(msg, f.qos)
	c.startFlushLocked()
	return true
}

// latencySample: one delivery in this many is timed for the latency
// histogram; timing every one costs a clock read per delivery.
const latencySample = 16

// noteSent counts one PUBLISH appended to the output. c.outMu must be held.
func (c *conn) noteSent(msg *Message, qos packet.QoS) {
	c.unsent[qos]++
	c.unsentBytes[qos] += uint64(len(msg.Payload))
	c.latTick++
	if c.latTick%latencySample == 0 && !msg.Created.IsZero() {
		c.srv.stats.noteLatency(time.Since(msg.Created))
	}
}
