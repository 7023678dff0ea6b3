package broker

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// Message is an application message as the broker routes and stores it.
// It is immutable once routed: every subscriber shares one Message.
//
// A broker holds one Message per retained topic and per queued message, so
// the struct is kept small (112 bytes, a 112-byte allocation): the
// properties are behind a pointer, nil for the usual PUBLISH without any,
// times are Unix nanoseconds rather than time.Time, and the wire-form cache
// exists only for messages that have been encoded for several sessions.
type Message struct {
	// ID identifies the message to a Store, which keeps one copy of the
	// body however many sessions it is queued for.
	ID      uint64
	Topic   string
	Payload []byte
	// Props are the PUBLISH properties to forward: Payload Format
	// Indicator, Content Type, Response Topic, Correlation Data and User
	// Properties, in order [MQTT-3.3.2-17/18]; nil when there are none.
	// Topic Alias, Subscription Identifiers and Message Expiry are per
	// delivery and not kept here. Shared and read-only like the rest.
	Props *packet.Properties
	// From is the publishing client's id (empty for the server's own
	// messages), for No Local.
	From string
	// ext holds what few messages have (msgExt), so that the others
	// stay in their allocation class; nil for none.
	ext *msgExt
	// created is when the broker received the message and expires when
	// its MQTT 5 Message Expiry Interval runs out, both in Unix
	// nanoseconds, 0 for unknown / never. Wall-clock time, as stored: a
	// message's expiry outlives the process.
	created, expires int64
	QoS              packet.QoS
	Retain           bool

	// shareWire says the message goes to several sessions, so its wire
	// forms are worth caching (set before the message is shared).
	shareWire bool
	// inline says the publisher is not busy (its read brought this one
	// packet), so a delivery is written at once by whoever delivers it
	// (conn.flushNowLocked) rather than by a flusher goroutine. Set before
	// the message is shared.
	inline bool
	// accepted says the message was taken before for the sessions it
	// goes to (RemoteMessage.Accepted): a session's queue limits do not
	// drop it. Set before the message is shared.
	accepted bool
	// routedHere says this server routed the message (routeOrigin: a
	// client's PUBLISH, a will, the server's own), rather than a cluster
	// delivering or a store restoring it. A cluster names the place of
	// such a message from its own id when it writes a queued copy
	// (RoutedHere), at no cost to the routing (catchup.go). Set before
	// the message is shared.
	routedHere bool
	// wire is allocated by the first wireFor, so messages that go to one
	// session (and retained ones nobody reads) carry 8 bytes for it.
	wire atomic.Pointer[wireCache]
}

// Created returns when the broker received m; zero if unknown.
func (m *Message) Created() time.Time { return fromNano(m.created) }

// Expires returns when m's MQTT 5 Message Expiry Interval runs out; zero
// means never.
func (m *Message) Expires() time.Time { return fromNano(m.expires) }

// SetCreated and SetExpires set the times Created and Expires return. They
// are for whoever builds a Message (a Store restoring one), before it is
// routed.
func (m *Message) SetCreated(t time.Time) { m.created = toNano(t) }

// SetExpires: see SetCreated. The zero time means never.
func (m *Message) SetExpires(t time.Time) { m.expires = toNano(t) }

func toNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// setProps takes a Message Expiry Interval out of props (it is rewritten
// per delivery with the time left) into m.expires, counted from now, and
// keeps props for forwarding only if any property is left.
func (m *Message) setProps(props *packet.Properties, now int64) {
	p := *props
	if p.Has(packet.PropMessageExpiry) {
		m.expires = now + int64(p.MessageExpiry)*int64(time.Second)
		p.Clear(packet.PropMessageExpiry)
		p.MessageExpiry = 0
	}
	p.Clear(packet.PropTopicAlias)
	p.TopicAlias = 0
	p.Clear(packet.PropSubscriptionID)
	p.SubscriptionIDs = nil
	p.Clear(packet.PropWillDelay) // a will's; never forwarded
	p.WillDelay = 0
	if p.Present != 0 {
		m.Props = &p
	}
}

// wireCache holds the encoded PUBLISH forms of a shared message.
type wireCache struct {
	mu    sync.Mutex
	forms []wireForm
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
	wc := m.wire.Load()
	if wc == nil {
		wc = new(wireCache)
		if !m.wire.CompareAndSwap(nil, wc) {
			wc = m.wire.Load()
		}
	}
	wc.mu.Lock()
	defer wc.mu.Unlock()
	for _, f := range wc.forms {
		if f.v == v && f.qos == qos && f.retain == retain {
			return f, nil
		}
	}
	p := packet.Publish{QoS: qos, Retain: retain, Topic: m.Topic, Payload: m.Payload}
	if m.Props != nil {
		p.Properties = *m.Props
	}
	if qos > 0 {
		p.PacketID = 1 // patched per delivery
	}
	var buf []byte
	if n := len(wc.forms); n < cap(wc.forms) {
		// The buffer of a form of the reader's previous message
		// (reuseMessage); nil for any other message.
		buf = wc.forms[:n+1][n].b[:0]
	}
	b, err := p.Encode(buf, v)
	if err != nil {
		return wireForm{}, err
	}
	h, err := packet.ParseFixedHeader(b)
	if err != nil {
		return wireForm{}, err
	}
	f := wireForm{v: v, qos: qos, retain: retain, b: b, pidAt: h.HeaderLen + 2 + len(m.Topic)}
	wc.forms = append(wc.forms, f)
	return f, nil
}

// queuedSize is what m counts towards Options.MaxQueuedBytes.
func (m *Message) queuedSize() int { return len(m.Topic) + len(m.Payload) }

func (m *Message) expired(now time.Time) bool {
	return m.expires != 0 && now.UnixNano() >= m.expires
}

// newMessage builds a Message from a client PUBLISH.
func (s *Server) newMessage(p *packet.Publish, from string) *Message {
	m := new(Message)
	s.fillMessage(m, p, from)
	return m
}

// reuseMessage overwrites m, the reader's own message (borrowable), with
// the message of p. The wire forms of m's previous message are gone, their
// memory is encoded into again: every delivery of that message copied the
// bytes into an output buffer before its routing returned.
func (s *Server) reuseMessage(m *Message, p *packet.Publish, from string) {
	wc := m.wire.Load()
	s.fillMessage(m, p, from)
	if wc != nil {
		wc.forms = wc.forms[:0]
		m.wire.Store(wc)
	}
}

// fillMessage overwrites m with the message of a client PUBLISH; m takes
// p's topic and payload as they are.
func (s *Server) fillMessage(m *Message, p *packet.Publish, from string) {
	now := time.Now().UnixNano()
	*m = Message{ID: s.msgID.Add(1), Topic: p.Topic, Payload: p.Payload, QoS: p.QoS, Retain: p.Retain, From: from, created: now}
	if p.Properties.Present != 0 {
		m.setProps(&p.Properties, now)
	}
}

// writePublish encodes one PUBLISH of msg for this connection and appends
// it to the output. It reports false when the message was discarded: QoS 0
// for a slow consumer, expired, or larger than the client's Maximum Packet
// Size [MQTT-3.1.2-25]. The caller holds the session lock (which guards the
// outbound topic aliases).
func (c *conn) writePublish(msg *Message, qos packet.QoS, retain bool, subIDs []uint32, pid uint16, dup bool) bool {
	if msg.shareWire && !dup && len(subIDs) == 0 && msg.expires == 0 && (c.version != packet.V5 || c.aliasMaxOut == 0) && c.mount == "" {
		if f, err := msg.wireFor(c.version, qos, retain); err == nil {
			return c.writeShared(msg, f, pid)
		}
	}
	// The mount point goes: the client sees its own tree (every filter
	// of its session starts with the mount point, so every topic does).
	name := strings.TrimPrefix(msg.Topic, c.mount)
	p := packet.Publish{Dup: dup, QoS: qos, Retain: retain, Topic: name, PacketID: pid, Payload: msg.Payload}
	newAlias := false
	if c.version == packet.V5 {
		if msg.Props != nil {
			p.Properties = *msg.Props
		}
		if msg.expires != 0 {
			left := time.Duration(msg.expires - time.Now().UnixNano())
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
			if a, ok := c.aliasOut[name]; ok {
				p.Topic = ""
				p.Properties.TopicAlias = a
				p.Properties.Set(packet.PropTopicAlias)
			} else if c.nextAliasOut < c.aliasMaxOut {
				c.nextAliasOut++
				if c.aliasOut == nil {
					c.aliasOut = make(map[string]uint16)
				}
				// A copy: msg.Topic may be a view into the publisher's
				// packet, payload included, which the map would keep
				// alive for this connection's life.
				c.aliasOut[strings.Clone(name)] = c.nextAliasOut
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
	if qos == 0 && c.pending() > maxOutBuffered {
		c.undoAlias(name, newAlias)
		c.sess.noteDrop(DropSlowConsumer)
		return false
	}
	c.room(len(msg.Topic) + len(msg.Payload) + 64) // the properties are rarely more
	ob := c.ob
	start := len(ob.out)
	var err error
	ob.out, err = p.Encode(ob.out, c.version)
	if err != nil || (c.maxOut > 0 && len(ob.out)-start > int(c.maxOut)) {
		ob.out = ob.out[:start]
		c.undoAlias(name, newAlias)
		c.sess.noteDrop(DropTooLarge)
		return false
	}
	c.noteSent(msg, qos)
	c.flushDelivery(msg)
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
	if f.qos == 0 && c.pending() > maxOutBuffered {
		c.sess.noteDrop(DropSlowConsumer)
		return false
	}
	if c.maxOut > 0 && len(f.b) > int(c.maxOut) {
		c.sess.noteDrop(DropTooLarge)
		return false
	}
	c.room(len(f.b))
	ob := c.ob
	start := len(ob.out)
	ob.out = append(ob.out, f.b...)
	if f.qos > 0 {
		ob.out[start+f.pidAt] = byte(pid >> 8)
		ob.out[start+f.pidAt+1] = byte(pid)
	}
	c.noteSent(msg, f.qos)
	c.flushDelivery(msg)
	return true
}

// flushDelivery writes or schedules the output a delivery of msg was
// appended to. c.outMu must be held.
func (c *conn) flushDelivery(msg *Message) {
	if msg.inline {
		c.flushNowLocked()
	} else {
		c.startFlushLocked()
	}
}

// latencySample: one delivery in this many is timed for the latency
// histogram; timing every one costs a clock read per delivery.
const latencySample = 16

// noteSent counts one PUBLISH appended to the output. c.outMu must be held.
func (c *conn) noteSent(msg *Message, qos packet.QoS) {
	ob := c.ob
	ob.unsent[qos]++
	ob.unsentBytes[qos] += uint64(len(msg.Payload))
	c.latTick++
	if c.latTick%latencySample == 0 && msg.created != 0 {
		// Wall clock: a step backwards would make it negative.
		c.srv.stats.noteLatency(max(0, time.Duration(time.Now().UnixNano()-msg.created)))
	}
}
