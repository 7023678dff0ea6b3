package broker

import (
	"errors"
	"strings"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// Cluster is the seam between one Server and the other nodes of a cluster
// (package cluster implements it on embedded NATS). Options.Cluster is nil
// for a single node, and then none of this file's code runs but three nil
// checks.
//
// The broker tells the cluster what its subscription tree holds, as
// (filter, group) pairs gaining their first or losing their last
// subscription, so other nodes forward only what someone here wants; and it
// hands the cluster every message published here, after local delivery.
// Messages from other nodes come back in through Server.DeliverRemote.
//
// Subscribed and Unsubscribed are called with session locks held: they must
// not block nor call back into the Server.
type Cluster interface {
	// Subscribed: the plain filter (no "$share/" prefix) within share group
	// ("" for none) has its first subscription on this node.
	Subscribed(filter, group string)
	// Unsubscribed: the last such subscription is gone.
	Unsubscribed(filter, group string)
	// Forward hands msg, published on this node, to the nodes with
	// matching subscriptions (and, for a retained message, to the
	// cluster's record of retained messages). It returns at once, with
	// the number of nodes msg was sent to and, for QoS 1 and 2, a wait
	// function that returns once every one of them has taken it, or the
	// error of one that did not confirm it in time (the publisher must
	// then not be told the message was delivered). wait is nil when there
	// is nothing to wait for; it is bounded by the cluster's forward
	// timeout, and must be called (from any goroutine, once) so that what
	// it waits for is released. Forward is called with no broker lock
	// held, and in the order messages were published.
	Forward(msg *Message) (targets int, wait func() error)
	// Claim makes this node the owner of clientID before its CONNECT is
	// accepted, so that one connection per client id holds in the whole
	// cluster: a connection with the id on another node is taken over
	// (that node calls TakenOver). An error means ownership could not be
	// recorded (no quorum, timeout): the CONNECT is refused with 0x88
	// Server unavailable. It may block, bounded, with no lock held.
	Claim(clientID string) error
}

// ErrForward wraps a Cluster.Forward failure in the log.
var ErrForward = errors.New("broker: forward to cluster failed")

// clusterSubscribe and clusterUnsubscribe keep the tree and the cluster's
// view of it in step. They are called where the tree changes, with the
// session lock held, as Cluster requires.
func (r *router) subscribe(filter, group string, ss *session, sub subscription) {
	if !r.tree.Subscribe(filter, group, ss, sub) && r.cluster != nil {
		r.cluster.Subscribed(filter, group)
	}
}

func (r *router) unsubscribe(filter, group string, ss *session) {
	if r.tree.Unsubscribe(filter, group, ss) && r.cluster != nil {
		r.cluster.Unsubscribed(filter, group)
	}
}

// forward hands a locally published message to the cluster. $SYS topics are
// each node's own and stay on it. It returns how many nodes the message was
// sent to and what its confirmation waits for (see Cluster.Forward).
func (s *Server) forward(msg *Message) (int, func() error) {
	c := s.opts.Cluster
	if c == nil || isSys(msg.Topic) {
		return 0, nil
	}
	n, wait := c.Forward(msg)
	if wait == nil {
		return n, nil
	}
	return n, func() error {
		if err := wait(); err != nil {
			s.log.Warn("message not confirmed by every node", "topic", msg.Topic, "qos", msg.QoS, "err", err)
			return errors.Join(ErrForward, err)
		}
		return nil
	}
}

func isSys(name string) bool {
	return strings.HasPrefix(name, "$SYS") && (len(name) == 4 || name[4] == '/')
}

// RemoteMessage is a message another node of the cluster forwards here:
// the fields of Message the publisher's node set, with Message Expiry as the
// time left when it was sent (clocks of nodes may differ; durations travel
// better than instants).
type RemoteMessage struct {
	Topic   string
	Payload []byte
	Props   *packet.Properties // forwarded PUBLISH properties; nil for none
	From    string             // publishing client id, for No Local
	QoS     packet.QoS
	Retain  bool
	// ExpiresIn is the Message Expiry time left; 0 means none.
	ExpiresIn time.Duration
	// Groups are the shared subscription groups ("group\x00filter") this
	// node is to serve; other groups matching the topic are served
	// elsewhere.
	Groups []string
}

// DeliverRemote delivers a message forwarded by another node to this node's
// matching sessions, as Forward's counterpart: it is not forwarded again,
// its RETAIN flag does not make it retained here (only Retain As Published
// reads it), and shared
// groups other than m.Groups are left to the nodes serving them. It
// returns the number of sessions it was routed to and the store ticket
// their queued copies wait for (see Store.Wait); the cluster waits for it
// before confirming a QoS 1/2 message to the sending node.
func (s *Server) DeliverRemote(m *RemoteMessage) (int, Ticket) {
	now := time.Now().UnixNano()
	msg := &Message{ID: s.msgID.Add(1), Topic: m.Topic, Payload: m.Payload, Props: m.Props, From: m.From,
		QoS: m.QoS, Retain: m.Retain, created: now}
	if m.ExpiresIn > 0 {
		msg.expires = now + int64(m.ExpiresIn)
	}
	groups := m.Groups
	if groups == nil {
		groups = []string{} // nil would mean "every group"
	}
	sc := s.router.matchGroups(msg, groups)
	msg.shareWire = len(sc.targets) > 1
	return s.deliverTargets(msg, sc)
}

// WaitDurable waits until store ticket t (from DeliverRemote) is durable;
// nil at once without a store.
func (s *Server) WaitDurable(t Ticket) error {
	if t == 0 || s.opts.Store == nil {
		return nil
	}
	return s.opts.Store.Wait(t)
}

// ErrClaim wraps a Cluster.Claim failure in the log.
var ErrClaim = errors.New("broker: client id ownership not recorded")

// claim asks the cluster for ownership of id; nil on a single node.
// Client ids the server assigned are random and never claimed elsewhere.
func (s *Server) claim(id string, assigned bool) error {
	if s.opts.Cluster == nil || assigned {
		return nil
	}
	if err := s.opts.Cluster.Claim(id); err != nil {
		return errors.Join(ErrClaim, err)
	}
	return nil
}

// ApplyRetained makes m this node's retained message for m.Topic (an empty
// payload clears it), within the retained limits, as the cluster's
// replicated record of retained messages says: the cluster calls it for
// every retained publish on any node, this one included, in one order on
// every node, so all nodes end with the same message per topic. It
// delivers nothing. It returns why m was not kept, if a limit refused it.
func (s *Server) ApplyRetained(m *RemoteMessage) error {
	if s.opts.DisableRetain {
		return nil
	}
	now := time.Now().UnixNano()
	msg := &Message{ID: s.msgID.Add(1), Topic: m.Topic, Payload: m.Payload, Props: m.Props, From: m.From,
		QoS: m.QoS, Retain: true, created: now}
	if m.ExpiresIn > 0 {
		msg.expires = now + int64(m.ExpiresIn)
	}
	_, err := s.ret.put(msg, s.retainLimits())
	if err != nil {
		s.noteRetainRefused(msg, err)
	}
	return err
}

// ClearRetainedIf clears the retained message of m.Topic if it is still m
// (as returned by RetainedMessages), and reports whether it did: the
// cluster clears, after catching up with its record of retained messages,
// those this node kept from before that the record no longer has, without
// clearing one that a publish replaced meanwhile.
func (s *Server) ClearRetainedIf(m *Message) bool {
	r := s.ret
	r.mu.Lock()
	defer r.mu.Unlock()
	if cur, ok := r.msgs.Get(m.Topic); !ok || cur != m {
		return false
	}
	r.msgs.Delete(m.Topic)
	r.account(m, -1)
	if r.store != nil && !isSysTopic(m.Topic) {
		r.store.Append(Op{Kind: OpRetainDel, Topic: m.Topic})
	}
	return true
}

// RetainedClearer is implemented by a Cluster that keeps the cluster's
// retained messages: ClearRetained records the clearing of topic's
// retained message for every node, without delivering anything; it
// returns once recorded, or the error (bounded by the cluster's forward
// timeout).
type RetainedClearer interface {
	ClearRetained(topic string) error
}

// clearRetainedInCluster hands an administrative clearing to the cluster,
// if it keeps retained messages; $SYS topics are each node's own.
func (s *Server) clearRetainedInCluster(name string) {
	rc, ok := s.opts.Cluster.(RetainedClearer)
	if !ok || isSys(name) {
		return
	}
	if err := rc.ClearRetained(name); err != nil {
		s.log.Error("retained message cleared on this node only: the cluster did not record it", "topic", name, "err", err)
	}
}

// ClusterFigures is implemented by a Cluster that has figures to publish
// under $SYS/broker/cluster/ with the broker's own (each node publishes its
// view: which nodes it reaches, the engine's health). Each figure is a
// topic suffix and its value.
type ClusterFigures interface {
	SysFigures() [][2]string
}

// HandOver takes clientID's session off this node because the client
// connected to another node: its connection, if any, gets DISCONNECT 0x8E
// Session taken over [MQTT-3.1.4-3]. A session that outlives its connection
// is returned whole (subscriptions, inflight and queued messages, inbound
// QoS 2 ids, a will still waiting for its delay) for the new node to Adopt;
// a session that does not (expiry 0) just ends and nil is returned. The
// connection's will is published unless the session goes on and the will
// has a delay [MQTT-3.1.3-9], as on a takeover within one node.
//
// A returned session stays here, offline and with its timers stopped,
// until the caller calls done (once): done(true) when the new node has
// adopted it, which ends it here without its will (the will moved with
// it); done(false) when the new node is not known to have it (it did not
// confirm in time: it gave up waiting, or this node was paused or cut off
// while the request was on its way), which ends the session here as any
// session ends, so its pending will is published now [MQTT-3.1.2-8] and
// only here. done does nothing if the client has come back to this node
// meanwhile.
func (s *Server) HandOver(clientID string) (rec *StoredSession, done func(adopted bool)) {
	// As for a takeover on one node: the old connection first applies
	// what its client already sent (a DISCONNECT in flight decides about
	// the will and the session) and detaches (takeover.go).
	s.settleTakeover(clientID)
	var wills []*willMsg
	s.mu.Lock()
	ss := s.sessions[clientID]
	if ss == nil {
		s.mu.Unlock()
		return nil, nil
	}
	ss.mu.Lock()
	moves := !ss.ended && ss.expiry > 0
	if oc := ss.conn; oc != nil {
		ss.conn = nil
		ss.offlineAt = time.Now().UnixNano()
		s.stats.connected.Add(-1)
		if w := ss.will; w != nil {
			ss.will = nil
			if !moves || w.delay == 0 {
				wills = append(wills, w)
			} else {
				ss.will, ss.willAt = w, time.Now().Add(w.delay).UnixNano()
			}
		}
		oc.kickOut(kickTakeover)
	}
	if moves {
		rec = ss.export()
		// Nothing fires here while the new node decides: its copy of
		// the will and of the expiry is the one that counts.
		ss.stopTimersLocked()
	}
	ss.mu.Unlock()
	if !moves {
		if w := s.endSessionLocked(ss); w != nil {
			wills = append(wills, w)
		}
	}
	s.mu.Unlock()
	for _, w := range wills {
		s.publishWill(w)
	}
	if !moves {
		return nil, nil
	}
	return rec, func(adopted bool) { s.endHandedOver(ss, adopted) }
}

// endHandedOver ends ss, a session HandOver returned, unless its client
// came back here meanwhile; see HandOver.
func (s *Server) endHandedOver(ss *session, adopted bool) {
	s.mu.Lock()
	ss.mu.Lock()
	live := s.sessions[ss.id] == ss && ss.conn == nil && !ss.ended
	if live && adopted {
		ss.will = nil // it went with the session
	}
	ss.mu.Unlock()
	var w *willMsg
	if live {
		w = s.endSessionLocked(ss)
		if !adopted {
			s.log.Info("session ended: its client id is owned by another node", "client_id", ss.id, "handed_over", false)
		}
	}
	s.mu.Unlock()
	if w != nil {
		s.publishWill(w)
	}
}

// Fence takes clientID's connection off this node because the cluster
// recorded another node as the id's owner and this node was not asked to
// let go in time (it was paused or cut off while the other node claimed
// the id): the connection ends as on a takeover, DISCONNECT 0x8E
// [MQTT-3.1.4-3], and its will and session follow the takeover rules
// (a will without delay is published now; a session with expiry 0 ends).
// A session that outlives the connection stays, offline, for a release
// request that may still come (HandOver) or for EndSession. It reports
// whether a session for the id is still here.
func (s *Server) Fence(clientID string) bool {
	if s.sessionState(clientID) == sessionConnected {
		// Kicks the connection and waits (bounded) until it detached,
		// applying what its client had already sent.
		s.settleTakeover(clientID)
	}
	return s.sessionState(clientID) != sessionNone
}

type sessionPresence int

const (
	sessionNone sessionPresence = iota
	sessionOffline
	sessionConnected
)

func (s *Server) sessionState(id string) sessionPresence {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.sessions[id]
	if ss == nil {
		return sessionNone
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	switch {
	case ss.ended:
		return sessionNone
	case ss.conn != nil:
		return sessionConnected
	}
	return sessionOffline
}

// EndSession ends clientID's session on this node if it is offline: its
// state is dropped and a will still waiting for its delay is published now,
// as when a session ends [MQTT-3.1.2-8]. The cluster calls it for a fenced
// session that no other node took over. It reports whether there was one.
func (s *Server) EndSession(clientID string) bool {
	s.mu.Lock()
	ss := s.sessions[clientID]
	live := false
	if ss != nil {
		ss.mu.Lock()
		live = ss.conn == nil && !ss.ended
		ss.mu.Unlock()
	}
	var w *willMsg
	if live {
		w = s.endSessionLocked(ss)
		s.log.Info("session ended: its client id is owned by another node", "client_id", clientID)
	}
	s.mu.Unlock()
	if w != nil {
		s.publishWill(w)
	}
	return live
}

// export is the session's state as a StoredSession. ss.mu must be held.
func (ss *session) export() *StoredSession {
	rec := &StoredSession{ClientID: ss.id, Expiry: ss.expiry, DisconnectedAt: unixTime(ss.offlineAt)}
	if ss.will != nil {
		rec.Will, rec.WillAt = ss.will.msg, unixTime(ss.willAt)
	}
	for _, sub := range ss.subs {
		rec.Subs = append(rec.Subs, StoredSub{Filter: sub.filter, Opts: sub.opts, ID: sub.id})
	}
	for _, ob := range ss.inflight {
		rec.Queue = append(rec.Queue, ob.stored())
	}
	for _, ob := range ss.queue[ss.qhead:] {
		rec.Queue = append(rec.Queue, ob.stored())
	}
	for pid := range ss.inQoS2 {
		rec.Inbound = append(rec.Inbound, pid)
	}
	return rec
}

// Adopt makes rec, a session another node handed over, this node's session
// for rec.ClientID (replacing any it had), so that the client's CONNECT
// that follows resumes it: CONNACK Session Present, inflight messages sent
// again with DUP, queued ones delivered. It is journalled in this node's
// store like any persistent session.
func (s *Server) Adopt(rec *StoredSession) {
	now := time.Now()
	var wills []*willMsg
	s.mu.Lock()
	if old := s.sessions[rec.ClientID]; old != nil {
		if w := s.endSessionLocked(old); w != nil {
			wills = append(wills, w)
		}
	}
	ss := newSession(s, rec.ClientID)
	ss.expiry = rec.Expiry
	ss.offlineAt = now.UnixNano()
	ss.mu.Lock()
	if rec.Will != nil && rec.WillAt.After(now) {
		ss.will, ss.willAt = &willMsg{msg: rec.Will}, rec.WillAt.UnixNano()
		ss.willTimer = time.AfterFunc(rec.WillAt.Sub(now), func() { s.fireWill(ss) })
	}
	s.loadSessionState(ss, rec, "handed-over", false)
	ss.recordSession() // first time: journals subscriptions and queue too
	if ss.expiry != neverExpires {
		ss.expiryTimer = time.AfterFunc(time.Duration(ss.expiry)*time.Second, func() { s.expireSession(ss) })
	}
	ss.mu.Unlock()
	s.sessions[ss.id] = ss
	s.mu.Unlock()
	for _, w := range wills {
		s.publishWill(w)
	}
}
