package broker

import (
	"runtime/debug"
	"time"
)

// detach unbinds a closing connection from its session. The will is
// published now, after its delay, or when the session ends, whichever
// comes first [MQTT-3.1.2-8, 3.1.3.2.2]; a session with expiry 0 ends now
// [MQTT-3.1.2-23], others get an expiry timer.
func (s *Server) detach(c *conn, publishWill bool) {
	ss := c.sess
	var due *willMsg
	s.mu.Lock()
	s.settledLocked(c)
	ss.mu.Lock()
	if ss.conn != c {
		// Taken over, or already ended: the taker dealt with the will
		// (and its claim replaced the cluster's record of it).
		ss.mu.Unlock()
		s.mu.Unlock()
		return
	}
	ss.conn = nil
	s.stats.connected.Add(-1)
	w := ss.will
	ss.will = nil
	if !publishWill {
		w = nil
	}
	switch {
	case ss.expiry == 0:
		ss.mu.Unlock()
		s.endSessionLocked(ss)
		due = w
	default:
		ss.offlineAt = time.Now().UnixNano()
		if w != nil && w.delay > 0 {
			s.delayWill(ss, w, ss.offlineAt+int64(w.delay))
		} else {
			due = w
		}
		ss.recordSession()
		if ss.expiry != neverExpires {
			ss.expiryTimer = time.AfterFunc(time.Duration(ss.expiry)*time.Second, func() { s.expireSession(ss) })
		}
		ss.mu.Unlock()
	}
	s.mu.Unlock()
	// A will the cluster recorded is published by the one node that
	// removes it from the record (CleanWillKeeper), others here.
	if !s.willDone(c, due) && due != nil {
		s.publishWill(due)
	}
}

// fireWill publishes w, a delayed will whose delay ran out while its
// session was still offline, unless the session no longer holds it (a
// timer that lost its race with a returning client, a takeover or the
// session's end).
func (s *Server) fireWill(ss *session, w *willMsg) {
	defer s.recoverTimer("delayed will", ss.id)
	ss.mu.Lock()
	if ss.will != w {
		ss.mu.Unlock()
		return
	}
	if ss.conn != nil || ss.ended {
		w = nil
	}
	ss.will = nil
	if w != nil {
		ss.recordSession()
	}
	ss.mu.Unlock()
	if w != nil {
		s.publishWill(w)
	}
}

// expireSession ends an offline session whose expiry interval passed.
func (s *Server) expireSession(ss *session) {
	defer s.recoverTimer("session expiry", ss.id)
	s.mu.Lock()
	ss.mu.Lock()
	live := s.sessions[ss.id] == ss && ss.conn == nil && !ss.ended
	ss.mu.Unlock()
	var w *willMsg
	if live {
		w = s.endSessionLocked(ss)
		s.stats.expiredSessions.Add(1)
		s.log.Info("session expired", "client_id", ss.id)
	}
	s.mu.Unlock()
	if w != nil {
		s.publishWill(w)
	}
}

// endSessionLocked removes ss from the server: its subscriptions leave the
// tree and its queues are dropped. It returns a will still pending, which
// the caller publishes after releasing s.mu. s.mu must be held, ss.mu not.
func (s *Server) endSessionLocked(ss *session) *willMsg {
	if s.sessions[ss.id] == ss {
		delete(s.sessions, ss.id)
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.ended {
		return nil
	}
	ss.ended = true
	ss.stopTimersLocked()
	// Off the tree before the store hears of the end: a cluster keeps
	// what its away copies take (AwayCopies) until their OpSessionDel,
	// and asks at match time, so a message matched in between would go
	// to a copy no longer kept, and end with it.
	for _, sub := range ss.subs {
		group, rest, _, _ := parseShare(sub.filter)
		s.router.unsubscribe(rest, group, ss)
	}
	ss.subs = nil
	if ss.stored {
		ss.stored = false
		s.opts.Store.Append(Op{Kind: OpSessionDel, ClientID: ss.id})
	}
	ss.inflight, ss.inflightBytes, ss.queue, ss.qhead, ss.qbytes, ss.qexpiring, ss.qpending = nil, 0, nil, 0, 0, 0, 0
	clear(ss.byPID)
	w := ss.will
	ss.will = nil
	return w
}

// publishWill publishes a will as if its client had sent it.
func (s *Server) publishWill(w *willMsg) {
	wm := w.msg
	if g, ok := s.opts.Cluster.(WillGuard); ok && w.durable && !g.OwnsWill(wm.From) {
		s.log.Info("will not published here: another node owns the client id and its session", "client_id", wm.From, "topic", wm.Topic)
		return
	}
	if !s.allowed(w.info, ActionPublish, wm.Topic) {
		s.log.Info("will not published: not authorized", "client_id", wm.From, "topic", wm.Topic)
		return
	}
	now := time.Now().UnixNano()
	m := &Message{ID: s.msgID.Add(1), Topic: wm.Topic, Payload: wm.Payload, QoS: wm.QoS, Retain: wm.Retain, From: wm.From, created: now}
	if wm.Retain && s.opts.CheckRetainSource {
		m.setSource(w.info)
	}
	if wm.Props != nil {
		// The will's Message Expiry counts from now, when it is published.
		m.setProps(wm.Props, now)
	}
	s.log.Info("publishing will", "client_id", m.From, "topic", m.Topic)
	s.publish(m)
}

// recoverTimer keeps a panic in work a timer runs (a delayed will, a
// session's expiry: the Authorizer is asked about the will) from taking the
// process down, as conn.run does for a connection: the panic is logged with
// its stack. Both timer functions publish only after releasing their own
// locks, and the Authorizer is asked with no lock held.
func (s *Server) recoverTimer(what, clientID string) {
	if r := recover(); r != nil {
		s.log.Error("panic in "+what+"; recovered", "client_id", clientID, "panic", r, "stack", string(debug.Stack()))
		if h := s.onPanic; h != nil {
			h(r)
		}
	}
}
