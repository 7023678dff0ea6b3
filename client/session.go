package client

import (
	"fmt"
	"slices"
	"strings"

	"github.com/roost-mqtt/roost/packet"
)

// session is the client's side of the MQTT session: it survives
// reconnects. Guarded by Client.mu.
type session struct {
	queue         []*op          // not yet sent, in call order
	inflight      map[uint16]*op // sent, awaiting the server's answer
	pubInflight   int            // QoS 1/2 publishes sent on this connection, unacknowledged (Receive Maximum)
	held          []*op          // in inflight, waiting to be resent on this connection, in order (connUp)
	nextID        uint16         // last packet identifier handed out
	nextSeq       uint64         // order of operations, the Store key
	subs          map[string]*subEntry
	subOrder      []*subEntry
	inQoS2        map[uint16]bool // inbound QoS 2 ids awaiting PUBREL -> handler done
	kept          map[uint64]*op  // tagged publishes completed and kept in the Store, by tag (PublishAsyncTagged)
	restored      []RestoredPublish
	closing       bool // Disconnect called
	connectedOnce bool // a CONNACK was accepted: later CONNECTs resume
}

func (s *session) init() {
	s.inflight = make(map[uint16]*op)
	s.subs = make(map[string]*subEntry)
	s.inQoS2 = make(map[uint16]bool)
	s.kept = make(map[uint64]*op)
}

type opKind uint8

const (
	opPublish opKind = iota
	opSubscribe
	opUnsubscribe
)

// op is one operation that needs an answer from the server (or, for QoS 0,
// only a connection).
type op struct {
	kind      opKind
	msg       *Message       // opPublish
	subs      []Subscription // opSubscribe
	filters   []string       // opUnsubscribe
	props     packet.Properties
	id        uint16
	seq       uint64
	sent      bool   // written at least once: resend with DUP
	pubrel    bool   // QoS 2: PUBREC received, PUBREL sent
	held      bool   // inflight from an earlier connection, not yet resent on this one
	stored    bool   // in Options.Store
	tag       uint64 // PublishAsyncTagged: kept in the Store after completing, until Forget
	completed bool   // tagged, completed, kept
	done      chan struct{}
	ack       Ack
	codes     []packet.ReasonCode
	err       error
}

func (o *op) needsID() bool { return o.kind != opPublish || o.msg.QoS > 0 }

// complete records the outcome and wakes the caller. Idempotent.
func (o *op) complete(ack Ack, codes []packet.ReasonCode, err error) {
	if o.done == nil {
		return
	}
	o.ack, o.codes, o.err = ack, codes, err
	close(o.done)
	o.done = nil
}

// failAll fails every waiting operation; ops stay where they are (the
// client is stopping) so the Store keeps its copies.
func (s *session) failAll(err error) {
	for _, o := range s.queue {
		o.complete(Ack{}, nil, err)
	}
	for _, o := range s.inflight {
		o.complete(Ack{}, nil, err)
	}
}

// allocID returns a free packet identifier, or 0 when all are in use.
func (s *session) allocID() uint16 {
	if len(s.inflight) >= 65535 {
		return 0
	}
	for {
		s.nextID++
		if s.nextID == 0 {
			s.nextID = 1
		}
		if _, used := s.inflight[s.nextID]; !used {
			return s.nextID
		}
	}
}

// enqueue adds o to the queue and sends what can be sent. c.mu is held.
func (c *Client) enqueue(o *op) error {
	if c.state == stateClosed || c.sess.closing {
		return ErrClosed
	}
	if len(c.sess.queue) >= c.opts.OfflineQueue {
		return ErrQueueFull
	}
	c.sess.nextSeq++
	o.seq = c.sess.nextSeq
	o.done = make(chan struct{})
	if o.kind == opPublish && o.msg.QoS > 0 && c.opts.Store != nil {
		if err := c.storePut(o); err != nil {
			return err
		}
	}
	c.sess.queue = append(c.sess.queue, o)
	c.pump()
	return nil
}

// dequeue removes o from the queue if it is still there (its caller gave
// up); an op already sent stays inflight and completes unobserved.
func (c *Client) dequeue(o *op) {
	if i := slices.Index(c.sess.queue, o); i >= 0 {
		c.sess.queue = slices.Delete(c.sess.queue, i, i+1)
		c.storeDelete(o)
	}
}

// pump sends, while there is a connection and the server's Receive
// Maximum allows, first the publishes held back since the connection came
// up, then queued operations, each in order. c.mu is held.
func (c *Client) pump() {
	cn := c.cn
	if cn != nil && len(c.sess.held) > 0 && !c.resendHeld(cn) {
		return
	}
	for cn != nil && len(c.sess.queue) > 0 {
		o := c.sess.queue[0]
		if o.isQoSPub() && c.sess.pubInflight >= int(cn.recvMax) {
			return
		}
		var id uint16
		if o.needsID() {
			if id = c.sess.allocID(); id == 0 {
				return
			}
		}
		c.sess.queue[0] = nil
		c.sess.queue = c.sess.queue[1:]
		o.id = id
		c.send(cn, o)
	}
}

// send writes o on cn for the first time.
func (c *Client) send(cn *conn, o *op) {
	var p packet.Packet
	switch o.kind {
	case opPublish:
		b, err := c.encodePublish(cn, o, false)
		if err != nil {
			c.storeDelete(o)
			o.complete(Ack{}, nil, err)
			return
		}
		o.sent = true
		if o.msg.QoS == 0 {
			cn.write(b)
			o.complete(Ack{}, nil, nil)
			return
		}
		c.sess.inflight[o.id] = o
		c.sess.pubInflight++
		c.storePut(o)
		cn.write(b)
		return
	case opSubscribe:
		p = o.subscribePacket()
	case opUnsubscribe:
		p = &packet.Unsubscribe{PacketID: o.id, Properties: o.props, Filters: o.filters}
	}
	c.sess.inflight[o.id] = o
	o.sent = true
	cn.writePacket(p)
}

func (o *op) subscribePacket() *packet.Subscribe {
	p := &packet.Subscribe{PacketID: o.id, Properties: o.props}
	for _, s := range o.subs {
		p.Subscriptions = append(p.Subscriptions, s.wire())
	}
	return p
}

// encodePublish encodes o's PUBLISH for cn, using a topic alias when
// enabled (never on a resend, whose alias mapping died with the old
// connection). It fails with ErrPacketTooLarge above the server's maximum.
func (c *Client) encodePublish(cn *conn, o *op, dup bool) ([]byte, error) {
	m := o.msg
	p := &packet.Publish{Dup: dup && m.QoS > 0, QoS: m.QoS, Retain: m.Retain, Topic: m.Topic,
		PacketID: o.id, Properties: m.Properties, Payload: m.Payload}
	p.Properties.Clear(packet.PropTopicAlias)
	p.Properties.SubscriptionIDs = nil
	if cn.v == packet.V5 && c.opts.TopicAliases && cn.aliasMax > 0 && !dup {
		if a, ok := cn.aliasOut[m.Topic]; ok {
			p.Topic = ""
			p.Properties.Set(packet.PropTopicAlias)
			p.Properties.TopicAlias = a
		} else if len(cn.aliasOut) < int(cn.aliasMax) {
			a := uint16(len(cn.aliasOut) + 1)
			// A copy: m.Topic may be a view into a bigger buffer (a
			// received message's packet, say) that the map would keep
			// alive for the connection's life.
			cn.aliasOut[strings.Clone(m.Topic)] = a
			p.Properties.Set(packet.PropTopicAlias)
			p.Properties.TopicAlias = a
		}
	}
	b, err := p.Encode(nil, cn.v)
	if err != nil {
		return nil, err
	}
	if cn.maxPacket > 0 && len(b) > int(cn.maxPacket) {
		return nil, ErrPacketTooLarge
	}
	return b, nil
}

// connUp makes cn the current connection: resend the SUBSCRIBEs and
// UNSUBSCRIBEs that were inflight, resubscribe if the server lost the
// session, then resend the unacknowledged publishes and send the queue, in
// their original order, as the Receive Maximum allows. c.mu is held.
func (c *Client) connUp(cn *conn) {
	c.cn = cn
	close(c.upCh)
	if !cn.connack.SessionPresent {
		clear(c.sess.inQoS2)
	}
	// Every unacknowledged publish is held, then resent in order within
	// the new connection's Receive Maximum, which may be smaller than the
	// last one's: the send quota is not preserved across connections
	// [MQTT-4.9.0-1], and with it used up no PUBLISH QoS > 0 may be sent
	// [MQTT-4.9.0-2]; the rest wait for acknowledgements (pump). A resent
	// PUBREL takes quota too, as the PUBLISH it completes did: the server
	// holds that packet identifier until PUBCOMP, and counting it can
	// only make the client more careful.
	ops := make([]*op, 0, len(c.sess.inflight))
	for _, o := range c.sess.inflight {
		ops = append(ops, o)
	}
	slices.SortFunc(ops, func(a, b *op) int { return cmpU64(a.seq, b.seq) })
	c.sess.pubInflight, c.sess.held = 0, c.sess.held[:0]
	for _, o := range ops {
		if o.isQoSPub() {
			o.held = true
			c.sess.held = append(c.sess.held, o)
		} else {
			c.resend(cn, o) // SUBSCRIBE and UNSUBSCRIBE take no quota
		}
	}
	if !cn.connack.SessionPresent && !c.opts.NoResubscribe {
		c.resubscribe(cn)
	}
	c.pump()
}

// resendHeld resends held publishes in their original order while the
// quota allows, and reports whether none is left. c.mu is held.
func (c *Client) resendHeld(cn *conn) bool {
	for len(c.sess.held) > 0 {
		if c.sess.pubInflight >= int(cn.recvMax) {
			return false
		}
		o := c.sess.held[0]
		c.sess.held[0] = nil
		c.sess.held = c.sess.held[1:]
		o.held = false
		c.sess.pubInflight++
		c.resend(cn, o)
	}
	return true
}

func (o *op) isQoSPub() bool { return o.kind == opPublish && o.msg.QoS > 0 }

// resend writes an inflight op again on a new connection. A PUBLISH goes
// with DUP set [MQTT-4.4.0-1]; a QoS 2 publish already PUBREC'd goes as
// PUBREL. Its completion still waits for the server's PUBACK/PUBCOMP.
func (c *Client) resend(cn *conn, o *op) {
	switch o.kind {
	case opPublish:
		if o.pubrel {
			cn.writePacket(&packet.Pubrel{PacketID: o.id})
			return
		}
		b, err := c.encodePublish(cn, o, o.sent)
		if err != nil {
			c.forget(o)
			o.complete(Ack{}, nil, err)
			return
		}
		o.sent = true
		cn.write(b)
	case opSubscribe:
		cn.writePacket(o.subscribePacket())
	case opUnsubscribe:
		cn.writePacket(&packet.Unsubscribe{PacketID: o.id, Properties: o.props, Filters: o.filters})
	}
}

// resubscribe re-sends every subscription the server granted before and
// that no queued or inflight SUBSCRIBE covers: one SUBSCRIBE per set of
// properties (Subscription Identifier, User Properties), in the order the
// subscriptions were first made.
func (c *Client) resubscribe(cn *conn) {
	pending := map[string]bool{}
	for _, o := range c.sess.queue {
		for _, s := range o.subs {
			pending[s.Filter] = true
		}
	}
	for _, o := range c.sess.inflight {
		for _, s := range o.subs {
			pending[s.Filter] = true
		}
	}
	var ops []*op
	byProps := map[string]*op{}
	for _, e := range c.sess.subOrder {
		if !e.acked || pending[e.sub.Filter] {
			continue
		}
		key := fmt.Sprint(e.props.SubscriptionIDs, e.props.User)
		o := byProps[key]
		if o == nil {
			o = &op{kind: opSubscribe, props: e.props}
			byProps[key] = o
			ops = append(ops, o)
		}
		o.subs = append(o.subs, e.sub)
	}
	for _, o := range ops {
		if o.id = c.sess.allocID(); o.id == 0 {
			return
		}
		c.sess.inflight[o.id] = o
		o.sent = true
		cn.writePacket(o.subscribePacket())
	}
}

// forget removes a finished op from the session.
func (c *Client) forget(o *op) {
	if c.sess.inflight[o.id] == o {
		delete(c.sess.inflight, o.id)
		switch {
		case o.held:
			o.held = false
			c.sess.held = slices.DeleteFunc(c.sess.held, func(x *op) bool { return x == o })
		case o.isQoSPub():
			c.sess.pubInflight--
		}
	}
	c.storeDelete(o)
}

// keep records a tagged publish that completed as such in the Store, for
// Forget, instead of deleting it. c.mu is held.
func (c *Client) keep(o *op) {
	if c.sess.inflight[o.id] == o {
		delete(c.sess.inflight, o.id)
		if o.isQoSPub() && !o.held {
			c.sess.pubInflight--
		}
		if o.held {
			o.held = false
			c.sess.held = slices.DeleteFunc(c.sess.held, func(x *op) bool { return x == o })
		}
	}
	o.completed = true
	c.sess.kept[o.tag] = o
	if err := c.opts.Store.Put(StoredPublish{Seq: o.seq, Tag: o.tag, Completed: true}); err != nil {
		c.opts.Logger.Warn("client store put failed", "err", err)
	}
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
