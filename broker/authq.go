package broker

import (
	"runtime/debug"

	"github.com/roost-mqtt/roost/packet"
)

// Receive checks that may block.
//
// Every delivery asks the Authorizer whether the subscriber may receive the
// message. For an Authorizer that answers from memory (auth.ACL) that is a
// function call in the publisher's goroutine. An Authorizer that asks a
// service (auth.HTTPHook) answers from its cache when it can, but on a miss
// it waits for the service: done in the publisher's goroutine, a fan-out to
// N subscribers on a cold cache was N sequential requests before the
// publisher's next packet was read and its PUBACK sent, and a dead service
// stalled every publisher for N timeouts.
//
// So such an Authorizer implements CachedAuthorizer, and the publisher only
// asks Cached, which never blocks. A delivery whose answer is not known yet
// is queued for its subscriber like any queued message (journalled, under
// MaxQueued/MaxQueuedBytes, counted in the acknowledgement's store ticket)
// with outbound.pending set. Every queued message is asked about as it
// leaves the queue anyway (mayReceive, so that revoked access stops what
// waits); for a pending one that is its only check. At the head of the
// queue, mayReceive asks Cached again and, still without an answer, starts
// goroutines that call Allow with no lock held, for it and for up to
// askAhead-1 unchecked messages behind it (so 500 retained messages on a
// cold cache take about 500/askAhead round trips, not 500), and note each
// answer on its message. fill then sends the head if allowed and drops it
// if not, in queue order. While a session's queue holds pending messages,
// everything else for it queues behind them, QoS 0 included, so the order
// of its messages is kept [MQTT-4.6.0-5]. One subscriber's slow answer thus
// delays that subscriber only; the publisher and every other subscriber go
// on.

// CachedAuthorizer is an Authorizer whose Allow may block (it asks a
// service) but that can tell at once whether it already knows the answer.
// The broker then never calls Allow for a delivery in the publisher's
// goroutine or under a lock (see above).
type CachedAuthorizer interface {
	Authorizer
	// Cached returns what Allow would answer and true when that is known
	// without blocking (a cached answer, or the answer for a service known
	// to be down); false when Allow would have to wait. It is called with
	// the broker's session locks held: it must not block or call back into
	// the broker.
	Cached(c *ClientInfo, act Action, topic string) (allow, ok bool)
}

// offer hands msg to ss when its client may receive it, or may yet: an
// answer the CachedAuthorizer does not have at once is settled later (see
// above). It returns the store ticket of the delivery and false when the
// client may not receive msg.
func (s *Server) offer(ss *session, msg *Message, qos packet.QoS, retain bool, subIDs []uint32) (Ticket, bool) {
	info := ss.info.Load()
	az := s.opts.Authorizer
	switch {
	case az == nil || info != nil && info.internal: // DialInternal: trusted
		return ss.deliver(msg, qos, retain, subIDs), true
	case info == nil:
		// A session restored at start-up whose client has not come
		// back: who it is (its username) is not known yet, so the
		// check waits for its connection.
		return ss.deliverUnchecked(msg, qos, retain, subIDs), true
	}
	ca, ok := az.(CachedAuthorizer)
	if !ok {
		if !az.Allow(s.ctx, info, ActionReceive, msg.Topic) {
			return 0, false
		}
		return ss.deliver(msg, qos, retain, subIDs), true
	}
	allow, known := ca.Cached(info, ActionReceive, msg.Topic)
	switch {
	case !known:
		return ss.deliverUnchecked(msg, qos, retain, subIDs), true
	case !allow:
		return 0, false
	}
	return ss.deliver(msg, qos, retain, subIDs), true
}

// offerGated is offer for a share group's copy held for its claim
// (servedgate.go): it returns the copy queued, nil when none was.
func (s *Server) offerGated(ss *session, msg *Message, qos packet.QoS, retain bool, subIDs []uint32) (Ticket, *outbound, bool) {
	info := ss.info.Load()
	az := s.opts.Authorizer
	unchecked := false
	switch {
	case az == nil || info != nil && info.internal:
	case info == nil:
		unchecked = true
	default:
		ca, ok := az.(CachedAuthorizer)
		if !ok {
			if !az.Allow(s.ctx, info, ActionReceive, msg.Topic) {
				return 0, nil, false
			}
			break
		}
		allow, known := ca.Cached(info, ActionReceive, msg.Topic)
		if known && !allow {
			return 0, nil, false
		}
		unchecked = !known
	}
	t, ob := ss.deliverGated(msg, qos, retain, subIDs, unchecked)
	return t, ob, true
}

// receiveCached is what the Authorizer says at once about info's client
// receiving topic: a plain Authorizer is asked (it answers from memory),
// a CachedAuthorizer only looks. known is false when the answer would take
// waiting, or info is nil (the client is not known yet).
func (s *Server) receiveCached(info *ClientInfo, topic string) (allow, known bool) {
	az := s.opts.Authorizer
	if az == nil || info != nil && info.internal {
		return true, true
	}
	if info == nil {
		return false, false
	}
	if ca, ok := az.(CachedAuthorizer); ok {
		return ca.Cached(info, ActionReceive, topic)
	}
	return s.allowReceive(info, topic), true
}

// deliverUnchecked queues msg for ss with its receive check pending, then
// lets fill start the check if the client is connected. QoS 0 messages for
// an offline session are queued only when Options.QueueQoS0 is set, as in
// deliver. It returns the store ticket the publisher's acknowledgement must
// wait for.
func (ss *session) deliverUnchecked(msg *Message, qos packet.QoS, retain bool, subIDs []uint32) Ticket {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.ended || qos == 0 && ss.conn == nil && !(ss.srv.opts.QueueQoS0 && ss.expiry > 0) {
		return 0
	}
	ob := &outbound{msg: msg, qos: qos, retain: retain, subIDs: subIDs, unchecked: true, pending: true}
	if ss.catching() != nil {
		return ss.catchUpDeliver(ob)
	}
	if qos > 0 || ss.conn == nil {
		ss.assignSeq(ob) // journalled as any queued message (a QoS 0 one only while offline)
	}
	if !ss.enqueue(ob) {
		return 0
	}
	t := ss.recordDelivery(ob)
	ss.fill()
	return t
}

// settle marks ob, leaving the queue, as decided. ss.mu must be held.
func (ss *session) settle(ob *outbound) {
	ob.unchecked = false
	if ob.pending {
		ob.pending = false
		ss.qpending--
	}
}

// askAhead is how many receive checks of one session may be out at once.
const askAhead = 16

// ask starts the receive checks of the queue's first unchecked messages,
// up to askAhead of them, except those already asked or answered: one
// goroutine per topic among them. The head is one of them. ss.mu must be
// held.
func (ss *session) ask() {
	info := ss.info.Load()
	if info == nil {
		return // asked when the client connects (fill runs only then)
	}
	var byTopic map[string][]*outbound
	for i, n := ss.qhead, 0; i < len(ss.queue) && n < askAhead; i++ {
		ob := ss.queue[i]
		if !ob.unchecked {
			continue
		}
		n++
		if ob.asking || ob.answered {
			continue
		}
		ob.asking = true
		if byTopic == nil {
			byTopic = make(map[string][]*outbound)
		}
		byTopic[ob.msg.Topic] = append(byTopic[ob.msg.Topic], ob)
	}
	for topic, obs := range byTopic {
		go ss.resolve(topic, obs, info)
	}
}

// resolve asks the Authorizer whether info's client may receive topic, with
// no lock held, notes the answer on obs and lets fill act on it. Some of
// obs may have left the queue meanwhile (dropped for room, expired, session
// cleaned): nothing waits for their answer. An answer for an earlier
// connection (a takeover may bring another username) is not noted: fill
// asks again.
func (ss *session) resolve(topic string, obs []*outbound, info *ClientInfo) {
	allow := info != nil && ss.srv.allowReceive(info, topic)
	ss.mu.Lock()
	defer ss.mu.Unlock()
	current := info != nil && ss.info.Load() == info
	for _, ob := range obs {
		ob.asking = false
		if ob.unchecked && current {
			ob.answered, ob.allowed = true, allow
		}
	}
	if !ss.ended {
		ss.fill()
	}
}

// allowReceive asks the Authorizer whether info's client may receive
// topic. It runs in a goroutine of no connection's (resolve) or under a
// session lock (receiveCached), where a panic must not escape: it is
// recovered and logged, as conn.run does for a connection, and refuses
// (fail closed).
func (s *Server) allowReceive(info *ClientInfo, topic string) (allow bool) {
	if info.internal {
		return true
	}
	defer func() {
		if r := recover(); r != nil {
			allow = false
			s.log.Error("panic in Authorizer; refusing", "client_id", info.ClientID, "topic", topic, "panic", r,
				"stack", string(debug.Stack()))
			if h := s.onPanic; h != nil {
				h(r)
			}
		}
	}()
	return s.opts.Authorizer.Allow(s.ctx, info, ActionReceive, topic)
}

// popHead removes the queue's first message and returns it. ss.mu must be
// held and the queue not empty.
func (ss *session) popHead() *outbound {
	ob := ss.queue[ss.qhead]
	ss.queue[ss.qhead] = nil
	ss.qhead++
	ss.unqueue(ob)
	return ob
}
