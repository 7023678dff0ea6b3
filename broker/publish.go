package broker

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/roost-mqtt/roost/packet"
	"github.com/roost-mqtt/roost/topic"
)

// pubReader is what a reader run keeps for the PUBLISH packets it
// decodes: one Publish for all of them, the topic names its client
// repeats (so that a repeated topic is not a new string per message), and
// one Message for those routed without a copy (borrowable).
type pubReader struct {
	p      packet.Publish
	topics packet.TopicCache
	msg    Message
}

// readPublish decodes a PUBLISH into pr and handles it. When nothing can
// keep its message past handlePublish (Server.borrowable), the payload
// stays in body (which the reader reuses afterwards) and the message is
// pr.msg; otherwise both are fresh, as for any packet.
func (c *conn) readPublish(pr *pubReader, h packet.FixedHeader, body []byte) error {
	borrow := c.srv.borrowable(h)
	o := packet.PublishOptions{Topics: &pr.topics, BorrowPayload: borrow}
	if err := packet.DecodePublishWith(h, body, c.version, &pr.p, o); err != nil {
		return err
	}
	if c.srv.debug {
		c.trace(&pr.p)
	}
	var msg *Message
	if borrow {
		msg = &pr.msg
	}
	return c.handlePublish(&pr.p, msg)
}

// borrowable reports whether a client's PUBLISH with fixed header h can be
// routed with its payload still in the read buffer and in a Message the
// reader reuses, because no reference to the message can outlive its
// routing (handlePublish's call of publish). Such a message is QoS 0 and
// not retained; it is written into each online subscriber's output,
// encoded (a copy: conn.writePublish, Message.wireFor), or dropped, and
// kept nowhere, as long as:
//   - there is no Authorizer: with one, a delivery may wait in the
//     session's queue for its receive check (authq.go);
//   - there is no Cluster, which forwards messages after routing;
//   - QoS 0 messages are not queued for offline sessions
//     (Options.QueueQoS0).
//
// Anything new that keeps a QoS 0 message (a queue, a hook) must either
// copy it or make this false for it: a borrowed message kept is
// overwritten by the connection's next PUBLISH, its payload by the next
// read.
func (s *Server) borrowable(h packet.FixedHeader) bool {
	const qosRetain = 0x07 // PUBLISH flags: QoS bits and RETAIN
	return h.Flags&qosRetain == 0 && s.opts.Authorizer == nil && s.opts.Cluster == nil && !s.opts.QueueQoS0
}

// handlePublish takes a PUBLISH from the client: resolves its topic alias,
// validates it, routes it, and acknowledges by QoS. Inbound QoS 2 uses
// method A of [MQTT-4.3.3]: deliver on PUBLISH, remember the packet id until
// PUBREL, and never deliver a repeat of a remembered id again.
//
// msg, when not nil, is the Message to route a QoS 0 p in: p's payload is
// borrowed and the message must not outlive the call (borrowable).
func (c *conn) handlePublish(p *packet.Publish, msg *Message) error {
	c.received[p.QoS]++
	c.receivedBytes[p.QoS] += uint32(len(p.Payload))
	if p.QoS > c.maxQoS {
		// The client broke [MQTT-3.2.2-11]; 0x9B is what section
		// 3.2.2.3.4 says to disconnect it with.
		return protoErr(packet.QoSNotSupported, "MQTT-3.2.2-11", "PUBLISH at QoS %d, above this listener's Maximum QoS %d", p.QoS, c.maxQoS)
	}
	if c.pubRate != nil && !c.pubRate.allow(time.Now()) {
		return protoErr(packet.MessageRateTooHigh, "", "more than %g publishes per second", c.pubRate.rate)
	}
	if p.Properties.Present != 0 {
		if p.Properties.Has(packet.PropSubscriptionID) {
			return protoErr(packet.ProtocolError, "MQTT-3.3.4-6", "PUBLISH from a client with a Subscription Identifier")
		}
		if p.Properties.Has(packet.PropResponseTopic) && strings.ContainsAny(p.Properties.ResponseTopic, "+#") {
			return protoErr(packet.ProtocolError, "MQTT-3.3.2-14", "Response Topic %q has wildcards", p.Properties.ResponseTopic)
		}
	}
	if err := c.resolveAlias(p); err != nil {
		return err
	}
	if err := topic.ValidName(p.Topic, c.srv.opts.MaxTopicLevels); err != nil {
		return protoErr(packet.TopicNameInvalid, nameRule(err), "PUBLISH topic %s: %v", clipQuote(p.Topic), err)
	}
	if c.mount != "" {
		// After the alias: the client's aliases name its own topics.
		p.Topic = c.mount + p.Topic
	}
	if p.Retain && c.srv.opts.DisableRetain {
		return protoErr(packet.RetainNotSupported, "MQTT-3.2.2-14", "retained messages are disabled (Retain Available 0)")
	}
	if strings.HasPrefix(p.Topic, "$SYS") && (len(p.Topic) == 4 || p.Topic[4] == '/') && !connectionStateTopic(p.Topic) {
		// $SYS is the broker's own: accept the packet, deliver nothing.
		c.logger().Debug("ignoring client publish to $SYS", "topic", p.Topic)
		c.ackPublish(p, packet.NotAuthorized)
		return nil
	}
	if !c.allowed(ActionPublish, p.Topic) {
		c.logger().Debug("publish denied", "topic", p.Topic)
		c.ackPublish(p, packet.NotAuthorized)
		return nil
	}
	if lim := c.srv.opts.MaxPayloadSize; lim > 0 && len(p.Payload) > lim {
		// Dropped with its QoS flow completed, as mosquitto's
		// message_size_limit does; Debug, as for a denied publish: a
		// client repeating it must not flood the log.
		c.logger().Debug("publish dropped: payload over the size limit", "topic", p.Topic, "bytes", len(p.Payload), "limit", lim)
		c.ackPublish(p, packet.ImplementationSpecificError)
		return nil
	}
	if p.QoS > 0 {
		if err := c.srv.storeHealth(); err != nil {
			if c.version != packet.V5 {
				return protoErr(packet.QuotaExceeded, "", "cannot keep QoS %d messages: %v", p.QoS, err)
			}
			c.ackPublish(p, packet.QuotaExceeded)
			return nil
		}
	}
	switch p.QoS {
	case 0:
		if msg != nil {
			c.srv.reuseMessage(msg, p, c.clientID)
			msg.inline = c.lone
		} else {
			msg = c.newMessage(p)
		}
		c.srv.publish(msg)
	case 1:
		n, t, notRetained, confirm := c.srv.route(c.newMessage(p))
		c.needDurable(t)
		// The PUBACK waits in the output, as for the store, until the
		// other nodes confirmed: the next publish is read meanwhile.
		c.needConfirmed(confirm)
		c.ackPublish(p, c.publishCode(n, notRetained))
	case 2:
		return c.publishQoS2(p)
	}
	return nil
}

// publishQoS2 takes a QoS 2 PUBLISH by method A of [MQTT-4.3.3]: a new
// packet id is remembered and the message routed, a remembered one is
// answered without delivering again [MQTT-4.3.3-10], and PUBREC follows.
//
// A PUBREC for a remembered id needs no wait of its own: this connection's
// output already waits for ops appended after the id's (its CONNACK's
// session record, or the first PUBREC's ops on the same connection), and
// the store makes a prefix of its ops durable.
//
// In a cluster that carries Origins (OriginForwarder), a persistent
// session's id is remembered with a nonce until every node confirmed the
// message, and a resend of such an id is routed again under the same
// Origin, which every node routes once per session (origin.go): the
// publisher's node may have failed mid-exchange, and the id alone does not
// say whether the message reached every node.
func (c *conn) publishQoS2(p *packet.Publish) error {
	in, err := c.noteInQoS2(p.PacketID)
	if err != nil {
		return err
	}
	rc := packet.Success
	if !in.routed {
		if !in.origin.IsZero() {
			// The id and its nonce are durable (replicated) before the
			// message goes anywhere: a copy routed under a nonce the
			// session may lose would be routed again under another one.
			c.flushReplies() // before the wait
			if err := c.srv.WaitDurable(in.ticket); err != nil {
				return fmt.Errorf("%w: %w", errUnconfirmed, err)
			}
			if !in.resent {
				// A resend's nonce was durable before its first
				// routing: any claim since has read it.
				if err := c.checkOwner(p.PacketID); err != nil {
					return err
				}
			}
		}
		var confirm func() error
		rc, confirm = c.routeQoS2(p, in)
		// QoS 2 waits here, so that a failure ends the connection
		// before a PUBREC is in the output. The packet id stays
		// remembered: the message may still reach the nodes that did
		// not confirm, and a DUP resend is not delivered twice
		// [MQTT-4.3.3-10] (with an Origin, it is routed again to what
		// the first routing missed).
		c.flushReplies() // before the wait
		if err := wait(confirm); err != nil {
			return fmt.Errorf("%w: %w", errUnconfirmed, err)
		}
		if !in.origin.IsZero() && rc < 0x80 {
			// Not before the copies queued here are durable: the id's
			// op and theirs go to different streams, and a node killed
			// with the first in and the others not had its resend
			// elsewhere answered without routing, the copies lost
			// (bench/jepsen/RESULTS.md, "sg112";
			// cluster/repro TestReproRoutedBeforeQueued). The PUBREC
			// waits for them all the same, so the flusher marks it
			// before writing the PUBREC; the reader reads on (a wait
			// here cost a persistent publisher a replicated write per
			// message: docs/cluster.md, "What the publish path
			// costs"). Failing, the connection closes unmarked, as
			// the PUBREC's wait closes it.
			pid, nonce := p.PacketID, in.origin.Nonce
			c.afterDurable(func() { c.markRouted(pid, nonce) })
		}
	}
	c.reply(&packet.Pubrec{PacketID: p.PacketID, ReasonCode: rc})
	return nil
}

// checkOwner asks the cluster (OwnerChecker) whether c's client id is
// still this node's before the first routing of QoS 2 packet id pid. One
// that another node owns ends the connection as taken over (0x8E), the
// message not routed: the client sends it again where its session is
// now. One the cluster cannot tell about leaves the outcome unknown.
func (c *conn) checkOwner(pid uint16) error {
	oc, ok := c.srv.opts.Cluster.(OwnerChecker)
	if !ok {
		return nil
	}
	err := oc.CheckOwner(c.clientID)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrOwnedElsewhere):
		c.logger().Info("QoS 2 publish not routed: its client id is owned by another node", "packet_id", pid)
		c.kick.CompareAndSwap(kickNone, kickTakeover)
		return errKicked
	}
	return fmt.Errorf("%w: %w", errUnconfirmed, err)
}

// inQoS2Note is what noteInQoS2 found and did.
type inQoS2Note struct {
	// routed: the id is remembered and its message routed; answer
	// PUBREC only.
	routed bool
	// held: the store is held (Grouper) until routeQoS2 releases it.
	held bool
	// origin: route under it (origin.go) once ticket, the id's op, is
	// durable; zero for a publish on a single node or of a clean session.
	origin Origin
	ticket Ticket
	// resent: the id was routed under origin before, unconfirmed: this
	// is the publisher's resend (ResendClaimer).
	resent bool
}

// noteInQoS2 looks up an inbound QoS 2 packet id and remembers it when it is
// new. For a persistent session it also journals it: with a nonce in a
// cluster that carries Origins, else with the store held (Grouper) if it
// can be, until the message is routed (routeQoS2).
func (c *conn) noteInQoS2(pid uint16) (inQoS2Note, error) {
	ss := c.sess
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.conn != c {
		// Taken over [MQTT-3.1.4-3] without settling (settleTakeover
		// timed out): the reader still held packets that arrived
		// before. The new connection owns the session's packet ids,
		// and the client sends this PUBLISH again there
		// [MQTT-4.4.0-1]; routed here too, it would be delivered twice
		// once the new connection's PUBREL released the id.
		return inQoS2Note{}, errKicked
	}
	_, origins := c.srv.opts.Cluster.(OriginForwarder)
	origins = origins && ss.persisted()
	if nonce, seen := ss.inQoS2()[pid]; seen {
		if nonce == 0 || !origins {
			return inQoS2Note{routed: true}, nil
		}
		// Its routing was not confirmed (this node's or a failed
		// node's attempt): journalled again, the op to wait for.
		t := ss.record(Op{Kind: OpInboundPut, PacketID: pid, Nonce: nonce})
		return inQoS2Note{origin: Origin{c.clientID, pid, nonce}, ticket: t, resent: true}, nil
	}
	if len(ss.inQoS2()) >= int(c.srv.opts.ReceiveMaximum) {
		return inQoS2Note{}, protoErr(packet.ReceiveMaximumExceeded, "MQTT-3.3.4-9", "more than %d QoS 2 publishes awaiting PUBREL", c.srv.opts.ReceiveMaximum)
	}
	if origins {
		nonce := newNonce()
		ss.setInQoS2Nonce(pid, nonce)
		t := ss.record(Op{Kind: OpInboundPut, PacketID: pid, Nonce: nonce})
		return inQoS2Note{origin: Origin{c.clientID, pid, nonce}, ticket: t}, nil
	}
	ss.setInQoS2(pid)
	var in inQoS2Note
	if ss.persisted() {
		in.held = c.srv.holdStore()
		ss.record(Op{Kind: OpInboundPut, PacketID: pid})
	}
	return in, nil
}

// markRouted notes that every node confirmed the message of pid routed
// under nonce: a resend from now on is answered without routing. The
// PUBREC does not wait for the op: until it is durable, a resend is routed
// again under the same Origin, which delivers nothing twice.
func (c *conn) markRouted(pid uint16, nonce uint64) {
	ss := c.sess
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if cur, ok := ss.inQoS2()[pid]; !ok || cur != nonce {
		return // released (PUBREL) or taken again meanwhile
	}
	ss.in2.ids[pid] = 0
	if ss.persisted() {
		ss.journal(Op{Kind: OpInboundPut, PacketID: pid})
	}
}

// routeQoS2 routes a QoS 2 message and returns its PUBREC code and the
// cluster's confirmation to wait for; a failure code forgets the packet
// id. The output waits for its copies queued here (needDurable).
// With in.held, the store is released once every op of the message is
// appended (the id, the retained change, the deliveries, the id's removal
// for a failure code), so that a crash keeps all of them or none: a
// restart then either knows the id with the message delivered, or neither
// and routes the publisher's resend.
func (c *conn) routeQoS2(p *packet.Publish, in inQoS2Note) (packet.ReasonCode, func() error) {
	if in.held {
		defer c.srv.releaseStore()
	}
	msg := c.newMessage(p)
	if in.resent {
		msg.markResent()
	}
	n, t, notRetained, confirm := c.srv.routeOrigin(msg, in.origin)
	c.needDurable(t)
	rc := c.publishCode(n, notRetained)
	if rc >= 0x80 {
		c.forgetInQoS2(p.PacketID)
	}
	return rc, confirm
}

// inlineMaxTargets is the most sessions a message is written to inline
// (Message.inline).
const inlineMaxTargets = 8

// nameRule is the normative statement a topic name that topic.ValidName
// refused breaks, "" for Roost's own limit on levels.
func nameRule(err error) string {
	switch {
	case errors.Is(err, topic.ErrWildcardInName):
		return "MQTT-3.3.2-2"
	case errors.Is(err, topic.ErrEmpty):
		return "MQTT-4.7.3-1"
	case errors.Is(err, topic.ErrNullChar):
		return "MQTT-4.7.3-2"
	case errors.Is(err, topic.ErrTooLong):
		return "MQTT-4.7.3-3"
	case errors.Is(err, topic.ErrBadUTF8):
		return "MQTT-3.3.2-1"
	}
	return ""
}

// matchCode is the PUBACK/PUBREC reason for a message routed to n sessions.
func matchCode(n int) packet.ReasonCode {
	if n == 0 {
		return packet.NoMatchingSubscribers
	}
	return packet.Success
}

func (c *conn) ackPublish(p *packet.Publish, rc packet.ReasonCode) {
	switch p.QoS {
	case 1:
		c.reply(&packet.Puback{PacketID: p.PacketID, ReasonCode: rc})
	case 2:
		if rc >= 0x80 {
			c.reply(&packet.Pubrec{PacketID: p.PacketID, ReasonCode: rc})
			return
		}
		c.sess.mu.Lock()
		c.sess.setInQoS2(p.PacketID)
		c.sess.mu.Unlock()
		c.reply(&packet.Pubrec{PacketID: p.PacketID, ReasonCode: rc})
	}
}

// resolveAlias applies an MQTT 5 Topic Alias [MQTT-3.3.2.3.4]: a topic with
// an alias sets the mapping, an empty topic uses it.
func (c *conn) resolveAlias(p *packet.Publish) error {
	if c.version != packet.V5 || !p.Properties.Has(packet.PropTopicAlias) {
		if p.Topic == "" {
			return protoErr(packet.ProtocolError, "MQTT-3.3.2-1", "empty topic without a topic alias")
		}
		return nil
	}
	a := p.Properties.TopicAlias
	if a == 0 || a > c.aliasMaxIn {
		return protoErr(packet.TopicAliasInvalid, "MQTT-3.3.2-9", "topic alias %d outside 1..%d", a, c.aliasMaxIn)
	}
	if p.Topic == "" {
		t, ok := c.aliasIn[a]
		if !ok {
			// No numbered statement: section 3.3.2.3.4 makes it a
			// Protocol Error.
			return protoErr(packet.ProtocolError, "", "topic alias %d used before it was set (section 3.3.2.3.4)", a)
		}
		p.Topic = t
		return nil
	}
	if c.aliasIn == nil {
		c.aliasIn = make(map[uint16]string)
	}
	if t, ok := c.aliasIn[a]; !ok || t != p.Topic {
		// A copy: p.Topic is a view into the packet's body, payload
		// included, which the map would keep alive for the connection's
		// life.
		c.aliasIn[a] = strings.Clone(p.Topic)
	}
	return nil
}

// handlePubrel releases an inbound QoS 2 packet id and answers PUBCOMP.
func (c *conn) handlePubrel(p *packet.Pubrel) {
	ss := c.sess
	ss.mu.Lock()
	_, ok := ss.inQoS2()[p.PacketID]
	delete(ss.inQoS2(), p.PacketID)
	if ok && ss.persisted() {
		ss.record(Op{Kind: OpInboundDel, PacketID: p.PacketID})
	}
	ss.mu.Unlock()
	rc := packet.Success
	if !ok {
		rc = packet.PacketIdentifierNotFound
	}
	c.reply(&packet.Pubcomp{PacketID: p.PacketID, ReasonCode: rc})
}

// publish stores msg as retained when it says so and delivers it to every
// matching session. It returns how many sessions it was routed to and the
// store ticket an acknowledgement of it must wait for.
func (s *Server) publish(msg *Message) (int, Ticket) {
	n, t, _, confirm := s.route(msg)
	if confirm != nil {
		// Nobody to tell (a will, $SYS): the wait only releases what
		// the cluster holds for the confirmation.
		go confirm()
	}
	return n, t
}

// wait calls confirm if there is one.
func wait(confirm func() error) error {
	if confirm == nil {
		return nil
	}
	return confirm()
}

// route is publish that also returns why msg was not retained when it asked
// to be and a retained-message limit refused it (counted and logged here);
// it is delivered all the same. In a cluster, n counts the other nodes the
// message was sent to too, and confirm (nil when there is nothing to wait
// for) waits for their confirmation of a QoS 1/2 message; it must be called.
func (s *Server) route(msg *Message) (n int, last Ticket, notRetained error, confirm func() error) {
	return s.routeOrigin(msg, Origin{})
}

// routeOrigin is route for a message under Origin o (origin.go), which
// goes once to each session and share group that o did not reach before;
// a zero o routes as route does.
//
// A resend (Message.Resent) first claims the share groups it is to serve
// here (claimAhead), before the publish gate: a claim may wait for a
// stream's election, and the gate holds up every publish here. A claim
// that failed leaves its group out and fails confirm, so that the
// publisher sends the message again.
func (s *Server) routeOrigin(msg *Message, o Origin) (n int, last Ticket, notRetained error, confirm func() error) {
	msg.routedHere = true
	if !o.IsZero() {
		msg.SetOrigin(o)
	} else if msg.QoS == 2 && !msg.Retain {
		// Named as the cluster names its copies (RemoteMessage.Copy),
		// so that the sessions here that get it now get no copy of it
		// the cluster brings back later. (A retained message is left
		// as it was: its copy in the retained tree is sent again to
		// every new subscription.)
		if cn, ok := s.opts.Cluster.(CopyNamer); ok {
			if c := cn.LocalCopy(msg); c != 0 {
				msg.SetOrigin(copyOrigin(c))
			}
		}
	}
	// Before a resend's claims: a group served elsewhere is claimed
	// there (GroupPasser).
	s.passGroups(msg)
	once := s.groupOnce(o)
	var claimErr error
	if once != nil && msg.Resent() {
		once.chosen, claimErr = s.claimAhead(msg, o, nil)
	}
	if g, ok := s.opts.Cluster.(PublishGate); ok {
		g.LockPublish()
		defer g.UnlockPublish()
	}
	if once != nil {
		once.mark(s, msg.Resent())
	}
	sc := s.router.matchOnce(msg, nil, nil, matchMode{}, once)
	// Decided before msg is shared with anyone (the retained tree makes
	// it visible to new subscribers): from here on msg is immutable but
	// for its wire-form cache.
	msg.shareWire = len(sc.targets) > 1
	if len(sc.away) > 0 {
		if msg.ext == nil {
			msg.ext = &msgExt{}
		}
		msg.ext.away = slices.Clone(sc.away)
	}
	var chosen map[string]string
	if once != nil {
		chosen = once.chosen
	}
	s.gateServed(msg, sc, msg.Resent(), chosen)
	if len(sc.served) > 0 {
		if msg.ext == nil {
			msg.ext = &msgExt{}
		}
		msg.ext.served = slices.Clone(sc.served)
		msg.ext.servedTo = slices.Clone(sc.servedTo)
	}
	// Written inline by this goroutine, one send after another, only for
	// a few subscribers: for many, flusher goroutines write in parallel
	// on a machine with cores to spare.
	msg.inline = msg.inline && len(sc.targets) <= inlineMaxTargets
	if msg.Retain {
		if last, notRetained = s.retainPublished(msg); notRetained != nil {
			s.noteRetainRefused(msg, notRetained)
		}
	}
	n, t := s.deliverTargets(msg, sc)
	if s.opts.Cluster != nil {
		var remote int
		remote, confirm = s.forward(msg, o)
		n += remote
	}
	if claimErr != nil {
		confirm = failing(confirm, claimErr)
	}
	return n, max(last, t), notRetained, confirm
}

// failing is confirm (nil: nothing to wait for) returning err as well.
func failing(confirm func() error, err error) func() error {
	return func() error { return errors.Join(wait(confirm), err) }
}

// deliverTargets delivers msg to the sessions match found and releases sc.
// It returns how many sessions took it and the store ticket of their
// queued copies. The caller has set msg.shareWire before sharing msg.
//
// A message with an Origin goes only to the sessions that did not get it
// before under it (origin.go); one that did counts as taking it.
func (s *Server) deliverTargets(msg *Message, sc *routeScratch) (n int, last Ticket) {
	n = len(sc.targets)
	var h uint64
	if o := msg.Origin(); !o.IsZero() {
		h = o.Hash()
	}
	for i := range sc.targets {
		t := &sc.targets[i]
		if h != 0 {
			first, tk := t.sess.firstOrigin(h)
			if !first {
				if sc.gateOf(t.sess) >= 0 {
					sc.setGates(t.sess, nil, tk, true)
				}
				last = max(last, tk)
				continue
			}
		}
		var tk Ticket
		ok := true
		if sc.gateOf(t.sess) >= 0 {
			var ob *outbound
			tk, ob, ok = s.offerGated(t.sess, msg, t.qos, t.retain, t.subIDs)
			sc.setGates(t.sess, ob, tk, false)
		} else {
			// offer never waits for an Authorizer that may block (authq.go).
			tk, ok = s.offer(t.sess, msg, t.qos, t.retain, t.subIDs)
		}
		if !ok {
			n--
			continue
		}
		if h != 0 && tk != 0 {
			t.sess.originTicket(h, tk)
		}
		last = max(last, tk)
	}
	if len(sc.gates) > 0 {
		s.claimGates(msg, sc)
	}
	s.router.release(sc)
	return n, last
}

// storeHealth reports a store that cannot take more writes (a full disk),
// logging the first refusal of each episode.
func (s *Server) storeHealth() error {
	hc, ok := s.opts.Store.(HealthChecker)
	if !ok {
		return nil
	}
	err := hc.Healthy()
	if err != nil && s.storeSick.CompareAndSwap(false, true) {
		s.log.Error("store cannot take more writes; refusing QoS 1/2 publishes with 0x97 until it recovers", "err", err)
	} else if err == nil && s.storeSick.Load() && s.storeSick.CompareAndSwap(true, false) {
		s.log.Info("store accepts writes again")
	}
	return err
}
