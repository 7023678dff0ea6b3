package broker

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// session is the server side of an MQTT session: it outlives connections
// when the client asked for a persistent session. All fields are guarded by
// mu; the connection attached to it (conn) may change at any time under mu,
// so deliveries always look it up under the lock.
type session struct {
	srv *Server
	id  string
	// info describes the client of the latest connection, for the
	// Authorizer; atomic so deliveries need no session lock to read it.
	info atomic.Pointer[ClientInfo]

	mu      sync.Mutex
	conn    *conn  // nil while offline
	expiry  uint32 // session expiry interval, seconds; 0xFFFFFFFF never
	ended   bool   // removed from the server; every operation is a no-op
	stored  bool   // the store holds this session
	nextPID uint16 // (fields ordered to pack: sessions are per client)
	// recT is the ticket of the record a quiet resume's CONNACK waits for
	// instead of its own (attach, quietResume): what the store holds of
	// the session before the resume. Zero: nothing, or loaded from it.
	recT Ticket
	subs map[string]subscription

	// inflight holds QoS 1/2 messages sent and not yet completed, in send
	// order (the order they are resent in on resumption [MQTT-4.4.0-1]).
	inflight []*outbound
	byPID    map[uint16]*outbound
	// inflightBytes is the payload bytes of inflight, held under
	// Options.MaxInflightBytes.
	inflightBytes int
	// queue holds messages waiting for a connection or for room in the
	// inflight window, oldest first, from qhead on.
	queue []*outbound
	qhead int
	// qbytes is the topic and payload bytes of queue[qhead:], held
	// under Options.MaxQueuedBytes; qexpiring counts the queued messages
	// with a Message Expiry, so the sweep skips sessions without any;
	// qpending those whose first receive check is not answered yet
	// (authq.go), and those held for a share group's claim, answered or
	// not (servedgate.go): what comes after them queues behind them.
	qbytes    int
	qexpiring int32
	qpending  int32
	// in2 holds the packet ids of inbound QoS 2 publishes that were
	// delivered and await PUBREL (inQoS2): a repeated PUBLISH with one of
	// them is not delivered again [MQTT-4.3.3-10; method A of 4.3.3];
	// the Origins of the messages the session got lately (origin.go);
	// and a catch-up's state (catchup.go). nil until the first: few
	// sessions need any.
	in2 *inbound2

	will        *willMsg
	expiryTimer *time.Timer
	dropped     uint64
	nextSeq     uint64 // store key of the last queued delivery
	offlineAt   int64  // Unix ns; 0 while connected (8 bytes, not a time.Time's 24)
}

// outbound is one message on its way to this session's client.
type outbound struct {
	seq      uint64 // store key; 0 when the session is not persisted
	msg      *Message
	qos      packet.QoS
	retain   bool
	subIDs   []uint32
	pid      uint16
	released bool // PUBREC received and PUBREL sent (QoS 2)
	// unchecked: to be asked about as it leaves the queue (any message
	// queued while there is an Authorizer); pending: never asked about
	// yet; asking: a goroutine is asking; answered: the answer, allowed,
	// is in (authq.go).
	unchecked, pending, asking, answered, allowed bool
	// gated: queued to wait for its share group's claim (servedgate.go);
	// claimWait: the claim's answer is not in yet; claimDrop: the
	// group's copy went to another member, so this one is dropped.
	gated, claimWait, claimDrop bool
}

// willMsg is a will waiting for its connection to end or its delay to pass.
type willMsg struct {
	msg   *Message
	delay time.Duration
	info  *ClientInfo // who it is from, for the Authorizer; nil after a restart
	// durable: the will of a session that outlives its connection, kept
	// with it in the store. In a cluster that replicates sessions only
	// the node owning the client id publishes it (WillGuard).
	durable bool
	// at is when a delayed will is due (Unix ns), and timer publishes it
	// then (delayWill); here rather than in the session, which every
	// client has, since few sessions ever hold a delayed will.
	at    int64
	timer *time.Timer
}

// delayWill makes w the will ss publishes at at (Unix ns) unless its
// client comes back first. ss.mu must be held.
func (s *Server) delayWill(ss *session, w *willMsg, at int64) {
	w.at = at
	ss.will = w
	w.timer = time.AfterFunc(time.Duration(at-time.Now().UnixNano()), func() { s.fireWill(ss, w) })
}

func newSession(s *Server, id string) *session {
	return &session{srv: s, id: id}
}

// The session's maps are made on first write: many sessions never use
// some of them, and an idle connection should cost as little as possible.
// Reading and deleting work on nil maps. ss.mu must be held.

func (ss *session) setSub(filter string, sb subscription) {
	if ss.subs == nil {
		ss.subs = make(map[string]subscription)
	}
	ss.subs[filter] = sb
}

func (ss *session) setPID(ob *outbound) {
	if ss.byPID == nil {
		ss.byPID = make(map[uint16]*outbound)
	}
	ss.byPID[ob.pid] = ob
}

func (ss *session) setInQoS2(pid uint16) { ss.setInQoS2Nonce(pid, 0) }

// setInQoS2Nonce notes pid with the nonce of its routing not confirmed
// yet (0: routed).
func (ss *session) setInQoS2Nonce(pid uint16, nonce uint64) {
	if ss.in2 == nil {
		ss.in2 = &inbound2{}
	}
	if ss.in2.ids == nil {
		ss.in2.ids = make(map[uint16]uint64)
	}
	ss.in2.ids[pid] = nonce
}

// persisted reports whether the session's state goes to the store: it
// must outlive the connection and there is a store. ss.mu must be held.
func (ss *session) persisted() bool { return ss.expiry > 0 && ss.srv.opts.Store != nil }

// record appends op for this session to the store and makes the attached
// connection's next write wait for it. ss.mu must be held.
func (ss *session) record(op Op) Ticket {
	t := ss.journal(op)
	if c := ss.conn; c != nil {
		c.needDurable(t)
	}
	return t
}

// journal appends op for this session to the store without making the
// connection wait for it: for changes that no packet to the client depends
// on. ss.mu must be held.
func (ss *session) journal(op Op) Ticket {
	op.ClientID = ss.id
	return ss.srv.opts.Store.Append(op)
}

// recordSession stores the session's own fields, or deletes it from the
// store when it no longer outlives its connection. ss.mu must be held.
func (ss *session) recordSession() Ticket {
	st := ss.srv.opts.Store
	if st == nil {
		return 0
	}
	if !ss.persisted() {
		if !ss.stored {
			return 0
		}
		ss.stored = false
		return st.Append(Op{Kind: OpSessionDel, ClientID: ss.id})
	}
	first := !ss.stored
	ss.stored = true
	rec := StoredSession{ClientID: ss.id, Expiry: ss.expiry, DisconnectedAt: unixTime(ss.offlineAt), Seen: ss.seenList()}
	if ss.will != nil {
		rec.Will, rec.WillAt, rec.WillDelay = ss.will.msg, unixTime(ss.will.at), ss.will.delay
	}
	if !first {
		t := ss.record(Op{Kind: OpSessionPut, Session: rec})
		ss.recT = t
		return t
	}
	// The session existed unpersisted (its expiry was 0 until a takeover
	// raised it, or Adopt made it): what it already holds is stored with
	// it, in one append. A store that replicates it (a cluster's partition
	// stream, where an adopted session's first op replaces the record of
	// its earlier owners) must never have the session without the rest:
	// appended one op at a time, the cluster could send the first ones
	// alone, and a node that died before the rest left a record of the
	// first messages only (test/jepsen TestClusterFull seed 48).
	ops := []Op{{Kind: OpSessionPut, Session: rec}}
	for _, sub := range ss.subs {
		ops = append(ops, Op{Kind: OpSubPut, Sub: StoredSub{Filter: sub.filter, Opts: sub.opts, ID: sub.id}})
	}
	for _, ob := range ss.inflight {
		ss.assignSeq(ob)
		ops = append(ops, Op{Kind: OpQueuePut, Delivery: ob.stored()})
	}
	for _, ob := range ss.queue[ss.qhead:] {
		ss.assignSeq(ob)
		ops = append(ops, Op{Kind: OpQueuePut, Delivery: ob.stored()})
	}
	for pid, nonce := range ss.inQoS2() {
		ops = append(ops, Op{Kind: OpInboundPut, PacketID: pid, Nonce: nonce})
	}
	for i := range ops {
		ops[i].ClientID = ss.id
	}
	t := st.Append(ops...)
	if c := ss.conn; c != nil {
		// Its session fields and QoS 2 deliveries are to be durable
		// before the next write (record); the rest comes with them.
		c.needDurable(t)
	}
	ss.recT = t
	return t
}

// recordDelivery stores ob. Only a QoS 2 PUBLISH or PUBREL must wait for
// it: were its packet id lost in a crash, the message would go out again
// under another id and be delivered twice [MQTT-4.3.3]. A QoS 1 PUBLISH
// needs no wait — after a crash it is resent from the queue entry the
// publisher's acknowledgement waited for, at worst a duplicate, which QoS 1
// allows — and sparing it keeps the fsync off the subscriber's path.
func (ss *session) recordDelivery(ob *outbound) Ticket {
	if !ss.persisted() || ob.seq == 0 {
		return 0
	}
	op := Op{Kind: OpQueuePut, Delivery: ob.stored()}
	if ob.qos == 2 && ob.pid != 0 {
		return ss.record(op)
	}
	return ss.journal(op)
}

// recordDone deletes ob from the store. Nothing waits for that: a delete
// lost in a crash only repeats a delivery (QoS 1) or a PUBREL (QoS 2).
func (ss *session) recordDone(ob *outbound) {
	if ss.persisted() && ob.seq != 0 {
		ss.journal(Op{Kind: OpQueueDel, Delivery: StoredDelivery{Seq: ob.seq}})
	}
}

func (ob *outbound) stored() StoredDelivery {
	return StoredDelivery{Seq: ob.seq, Msg: ob.msg, QoS: ob.qos, Retain: ob.retain, SubIDs: ob.subIDs,
		PacketID: ob.pid, Released: ob.released}
}

func (ss *session) queueLen() int { return len(ss.queue) - ss.qhead }

// deliver hands a routed message to this session: written to the client at
// once when possible, otherwise queued. QoS 0 messages for an offline
// session are queued only when Options.QueueQoS0 is set. It returns the
// store ticket the publisher's acknowledgement must wait for.
func (ss *session) deliver(msg *Message, qos packet.QoS, retain bool, subIDs []uint32) Ticket {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.ended {
		return 0
	}
	c := ss.conn
	if ss.catching() != nil {
		if qos == 0 && c == nil && !(ss.srv.opts.QueueQoS0 && ss.expiry > 0) {
			return 0
		}
		return ss.catchUpDeliver(&outbound{msg: msg, qos: qos, retain: retain, subIDs: subIDs})
	}
	if qos == 0 {
		if c != nil && ss.qpending > 0 {
			// Behind messages whose receive check is pending, to keep
			// the order (authq.go).
			// Not journalled: a QoS 0 message for a connected client.
			if ss.enqueue(&outbound{msg: msg, retain: retain, subIDs: subIDs}) {
				ss.fill()
			}
		} else if c != nil {
			c.writePublish(msg, 0, retain, subIDs, 0, false)
		} else if ss.srv.opts.QueueQoS0 && ss.expiry > 0 {
			ob := &outbound{msg: msg, retain: retain, subIDs: subIDs}
			ss.assignSeq(ob)
			if ss.enqueue(ob) {
				return ss.recordDelivery(ob)
			}
		}
		return 0
	}
	ob := &outbound{msg: msg, qos: qos, retain: retain, subIDs: subIDs}
	ss.assignSeq(ob)
	if c != nil && ss.queueLen() == 0 && ss.room(c) {
		return ss.sendNew(c, ob)
	}
	if ss.enqueue(ob) {
		return ss.recordDelivery(ob)
	}
	return 0
}

func (ss *session) assignSeq(ob *outbound) {
	if ss.persisted() {
		ss.nextSeq++
		ob.seq = ss.nextSeq
	}
}

// enqueue appends ob to the queue, applying the drop policy when that
// would put the queue over MaxQueued messages or MaxQueuedBytes bytes: drop
// the oldest queued QoS 0 messages if that makes room, otherwise drop the
// new message. Every dropped message is counted (DropQueueFull). A message
// accepted before (Message.accepted) is queued past the limits. It reports
// whether ob was queued.
func (ss *session) enqueue(ob *outbound) bool {
	size := ob.msg.queuedSize()
	opts := &ss.srv.opts
	overN := ss.queueLen() + 1 - opts.MaxQueued
	overB := ss.qbytes + size - opts.MaxQueuedBytes
	if !ob.msg.accepted && (overN > 0 || overB > 0) && (size > opts.MaxQueuedBytes || !ss.evictQoS0(overN, overB)) {
		ss.noteDrop(DropQueueFull)
		return false
	}
	if ss.srv.opts.Authorizer != nil {
		ob.unchecked = true // asked about again as it leaves (mayReceive)
	}
	if ss.qhead > 0 && ss.qhead >= len(ss.queue)/2 {
		n := copy(ss.queue, ss.queue[ss.qhead:])
		clear(ss.queue[n:])
		ss.queue, ss.qhead = ss.queue[:n], 0
	}
	ss.queue = append(ss.queue, ob)
	ss.requeue(ob)
	return true
}

// evictQoS0 drops the oldest queued QoS 0 messages until at least n
// messages and b bytes are freed, counting each drop. When all queued QoS 0
// messages together would not free that much it drops none and returns
// false: the new message is the one to go.
func (ss *session) evictQoS0(n, b int) bool {
	last, freedN, freedB := -1, 0, 0
	for i := ss.qhead; i < len(ss.queue) && (freedN < n || freedB < b); i++ {
		if ob := ss.queue[i]; ob.qos == 0 {
			last, freedN, freedB = i, freedN+1, freedB+ob.msg.queuedSize()
		}
	}
	if freedN < n || freedB < b {
		return false
	}
	w := ss.qhead
	for i := ss.qhead; i < len(ss.queue); i++ {
		ob := ss.queue[i]
		if i <= last && ob.qos == 0 {
			ss.noteDrop(DropQueueFull)
			ss.unqueue(ob)
			ss.recordDone(ob)
			continue
		}
		ss.queue[w] = ob
		w++
	}
	clear(ss.queue[w:])
	ss.queue = ss.queue[:w]
	return true
}

// requeue and unqueue account for ob joining and leaving the queue.
func (ss *session) requeue(ob *outbound) {
	ss.qbytes += ob.msg.queuedSize()
	if ob.msg.expires != 0 {
		ss.qexpiring++
	}
	if ob.pending {
		ss.qpending++
	}
	if ob.gated {
		ss.qpending++
	}
}

func (ss *session) unqueue(ob *outbound) {
	ss.qbytes -= ob.msg.queuedSize()
	if ob.msg.expires != 0 {
		ss.qexpiring--
	}
	if ob.unchecked {
		ss.settle(ob)
	}
	if ob.gated {
		ss.qpending--
	}
}

// noteDrop counts a message not delivered to this session; the first drop
// and every 1000th are logged. ss.mu must be held.
func (ss *session) noteDrop(why DropReason) {
	ss.srv.stats.dropped[why].Add(1)
	ss.dropped++
	if ss.dropped == 1 || ss.dropped%1000 == 0 {
		ss.srv.log.Warn("dropping messages for session", "client_id", ss.id, "reason", why.String(), "dropped_total", ss.dropped)
	}
}

// allocPID returns a packet identifier not used by an inflight message.
func (ss *session) allocPID() uint16 {
	for {
		ss.nextPID++
		if ss.nextPID == 0 {
			ss.nextPID = 1
		}
		if _, used := ss.byPID[ss.nextPID]; !used {
			return ss.nextPID
		}
	}
}

// sendNew puts a message in flight on c (QoS 0 ones just go out). The
// delivery is recorded with its packet id before the PUBLISH can leave, so a
// restart resends it with the same id and DUP set.
func (ss *session) sendNew(c *conn, ob *outbound) Ticket {
	if ob.qos == 0 {
		c.writePublish(ob.msg, 0, ob.retain, ob.subIDs, 0, false)
		ss.recordDone(ob)
		return 0
	}
	if ob.msg.expired(time.Now()) {
		ss.noteDrop(DropExpired)
		ss.recordDone(ob)
		return 0
	}
	ob.pid = ss.allocPID()
	t := ss.recordDelivery(ob)
	if !c.writePublish(ob.msg, ob.qos, ob.retain, ob.subIDs, ob.pid, false) {
		ss.recordDone(ob) // discarded (too large for the client): as if delivered
		return t
	}
	ss.inflight = append(ss.inflight, ob)
	ss.inflightBytes += len(ob.msg.Payload)
	ss.setPID(ob)
	return t
}

// room reports whether the inflight window has room for another message
// to c: fewer than c.window messages, and, with Options.MaxInflightBytes,
// fewer payload bytes than that (so one message larger than it still goes
// out alone, as with mosquitto's max_inflight_bytes).
func (ss *session) room(c *conn) bool {
	lim := ss.srv.opts.MaxInflightBytes
	return len(ss.inflight) < c.window && (lim == 0 || ss.inflightBytes < lim)
}

// fill moves queued messages into the inflight window, each once
// mayReceive allows it. It stops at a message whose answer is not in yet.
func (ss *session) fill() {
	if ss.catching() != nil {
		return // sent once caught up (catchup.go)
	}
	c := ss.conn
	for c != nil && ss.queueLen() > 0 && ss.room(c) {
		ob := ss.queue[ss.qhead]
		if ob.claimWait {
			break // sent once its share group is claimed (servedgate.go)
		}
		if ob.claimDrop {
			// The group's copy went to another member.
			ss.popHead()
			ss.recordDone(ob)
			continue
		}
		allow, known := ss.mayReceive(ob)
		if !known {
			break
		}
		fresh := ob.pending
		ss.popHead()
		if !allow {
			if !fresh {
				// It had been allowed: the rules changed meanwhile.
				ss.noteDrop(DropUnauthorized)
			}
			ss.recordDone(ob) // deleted from the store: not sent after a restart either
			continue
		}
		ss.sendNew(c, ob)
	}
	if ss.qhead == len(ss.queue) {
		ss.queue, ss.qhead = ss.queue[:0], 0
	}
}

func (ss *session) remove(ob *outbound) {
	ss.recordDone(ob)
	delete(ss.byPID, ob.pid)
	// Acknowledgements mostly come in send order: dropping the head is
	// O(1); only an out-of-order ack shifts the rest.
	if len(ss.inflight) > 0 && ss.inflight[0] == ob {
		ss.inflight[0] = nil
		ss.inflight = ss.inflight[1:]
		ss.inflightBytes -= len(ob.msg.Payload)
		return
	}
	for i, x := range ss.inflight {
		if x == ob {
			ss.inflightBytes -= len(ob.msg.Payload)
			copy(ss.inflight[i:], ss.inflight[i+1:])
			ss.inflight[len(ss.inflight)-1] = nil
			ss.inflight = ss.inflight[:len(ss.inflight)-1]
			return
		}
	}
}

// onPuback completes a QoS 1 delivery [MQTT-4.3.2]. An unknown id is
// ignored: it may be a late ack for a message already completed.
func (ss *session) onPuback(pid uint16) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ob := ss.byPID[pid]; ob != nil && ob.qos == 1 {
		ss.remove(ob)
		ss.fill()
	}
}

// onPubrec answers PUBREC with PUBREL [MQTT-4.3.3]; a failure code ends the
// delivery instead.
func (ss *session) onPubrec(pid uint16, rc packet.ReasonCode) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ob := ss.byPID[pid]
	c := ss.conn
	switch {
	case ob == nil || ob.qos != 2:
		if c != nil {
			c.send(&packet.Pubrel{PacketID: pid, ReasonCode: packet.PacketIdentifierNotFound})
		}
	case rc >= 0x80:
		ss.remove(ob)
		ss.fill()
	default:
		ob.released = true
		ss.recordDelivery(ob)
		if c != nil {
			c.send(&packet.Pubrel{PacketID: pid})
		}
	}
}

// onPubcomp completes a QoS 2 delivery.
func (ss *session) onPubcomp(pid uint16) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ob := ss.byPID[pid]; ob != nil && ob.qos == 2 && ob.released {
		ss.remove(ob)
		ss.fill()
	}
}

// resume sends what the previous connection left unfinished, in order:
// PUBLISH with DUP for unacknowledged messages, PUBREL for released ones
// [MQTT-4.4.0-1], then queued messages. ss.mu must be held.
func (ss *session) resume(c *conn) {
	// Unacknowledged messages go out again even if the rules no longer
	// let the client read them: onward delivery has started, and the
	// client may hold their packet ids (as for expiry, [MQTT-3.3.2-5]).
	// Queued ones are checked as they leave the queue (fill, mayReceive).
	for _, ob := range ss.inflight {
		if ob.released {
			c.send(&packet.Pubrel{PacketID: ob.pid})
		} else {
			c.writePublish(ob.msg, ob.qos, ob.retain, ob.subIDs, ob.pid, true)
		}
	}
	ss.fill()
}

// mayReceive decides whether ob, the queue's head, may go to the client
// as it leaves the queue. Every message queued while there is an Authorizer
// is asked about here (unchecked): the rules may have changed since it was
// queued (an ACL reload), and revoked read access must stop deliveries
// already waiting, not only new ones; a message queued before its first
// check was answered (pending, authq.go) is decided here too. Messages sent
// at once when published are not asked twice (route just asked). A plain
// Authorizer is asked inline, with ss.mu held; a CachedAuthorizer that has
// no answer at once has it asked with no lock held (ask), and known is
// false until the answer is in. ss.mu must be held; with no Authorizer
// this is one comparison.
func (ss *session) mayReceive(ob *outbound) (allow, known bool) {
	if !ob.unchecked {
		return true, true
	}
	if ob.answered {
		return ob.allowed, true
	}
	if allow, known = ss.srv.receiveCached(ss.info.Load(), ob.msg.Topic); !known {
		ss.ask()
	}
	return allow, known
}

func (ss *session) stopTimers() {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.stopTimersLocked()
}

func (ss *session) stopTimersLocked() {
	if w := ss.will; w != nil && w.timer != nil {
		w.timer.Stop()
		w.timer = nil
	}
	if ss.expiryTimer != nil {
		ss.expiryTimer.Stop()
		ss.expiryTimer = nil
	}
}

// unixTime is ns as a time.Time, with 0 as the zero Time.
func unixTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}
