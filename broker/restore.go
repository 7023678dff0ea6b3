package broker

import (
	"fmt"
	"time"

	"github.com/roost-mqtt/roost/topic"
)

// restore rebuilds sessions and retained messages from the store at
// start-up. Session expiry and will delays count the time the broker was
// down: a session whose expiry passed meanwhile ends now (publishing its
// will), a will that fell due is published now.
func (s *Server) restore() error {
	st, err := s.opts.Store.Load()
	if err != nil {
		return fmt.Errorf("broker: loading stored state: %w", err)
	}
	now := time.Now()
	var maxID uint64
	for _, m := range st.Retained {
		s.ret.restore(m)
		maxID = max(maxID, m.ID)
	}
	s.warnRetainedOver()
	var due []*willMsg
	for i := range st.Sessions {
		rec := &st.Sessions[i]
		ss, w := s.restoreSession(rec, now)
		for _, d := range rec.Queue {
			maxID = max(maxID, d.Msg.ID)
		}
		if w != nil {
			due = append(due, w)
		}
		if ss != nil {
			s.sessions[ss.id] = ss
		}
	}
	s.msgID.Store(maxID)
	s.log.Info("restored state", "sessions", len(s.sessions), "retained", len(st.Retained))
	for _, w := range due {
		s.publishWill(w)
	}
	return nil
}

// restoreSession rebuilds one stored session. It returns nil for a session
// that expired while the broker was down, and the will that is due now.
func (s *Server) restoreSession(rec *StoredSession, now time.Time) (*session, *willMsg) {
	ss := newSession(s, rec.ClientID)
	ss.expiry = rec.Expiry
	ss.stored = true
	off := rec.DisconnectedAt
	if off.IsZero() || off.After(now) {
		off = now // it was connected when the broker stopped
	}
	ss.offlineAt = off.UnixNano()
	var w *willMsg
	if rec.Will != nil {
		w = &willMsg{msg: rec.Will}
		if rec.WillAt.After(now) {
			w.at = rec.WillAt.UnixNano()
			ss.will, w = w, nil
		}
	}
	left := time.Duration(ss.expiry)*time.Second - now.Sub(off)
	if ss.expiry != neverExpires && left <= 0 {
		s.opts.Store.Append(Op{Kind: OpSessionDel, ClientID: ss.id})
		if w == nil && ss.will != nil {
			w = ss.will // the session ended before the will's delay
		}
		return nil, w
	}
	s.loadSessionState(ss, rec, "stored", true)
	if w := ss.will; w != nil {
		w.timer = time.AfterFunc(time.Duration(w.at-now.UnixNano()), func() { s.fireWill(ss, w) })
	}
	if ss.expiry != neverExpires {
		ss.expiryTimer = time.AfterFunc(left, func() { s.expireSession(ss) })
	}
	return ss, w
}

// loadSessionState gives ss the subscriptions, inflight and queued
// messages and inbound QoS 2 packet ids of rec, a session read from this
// node's store (keepSeq: its queue sequence numbers are this store's) or
// handed over by another node (they are not: recordSession journals them
// anew). ss.mu is held or ss is not yet shared.
func (s *Server) loadSessionState(ss *session, rec *StoredSession, origin string, keepSeq bool) {
	for _, sub := range rec.Subs {
		group, rest, _, err := topic.ParseShare(sub.Filter)
		if err != nil {
			s.log.Warn("dropping invalid "+origin+" subscription", "client_id", ss.id, "filter", sub.Filter, "err", err)
			continue
		}
		sb := subscription{filter: sub.Filter, opts: sub.Opts, id: sub.ID}
		ss.setSub(sub.Filter, sb)
		s.router.subscribe(rest, group, ss, sb)
	}
	for _, d := range rec.Queue {
		ob := &outbound{msg: d.Msg, qos: d.QoS, retain: d.Retain, subIDs: d.SubIDs, pid: d.PacketID, released: d.Released}
		if keepSeq {
			ob.seq = d.Seq
			ss.nextSeq = max(ss.nextSeq, d.Seq)
		} else if d.Msg.ID == 0 {
			// Another node's message ids mean nothing here.
			d.Msg.ID = s.msgID.Add(1)
		}
		if ob.pid != 0 {
			ss.inflight = append(ss.inflight, ob)
			ss.inflightBytes += len(ob.msg.Payload)
			ss.setPID(ob)
			ss.nextPID = max(ss.nextPID, ob.pid)
		} else {
			// Checked again before it is sent: it may have been queued
			// before its check was answered (authq.go), here or on the
			// node that handed it over, or the rules may have changed.
			ob.unchecked = s.opts.Authorizer != nil
			d.Claim.bind(ss, ob)
			ss.queue = append(ss.queue, ob)
			ss.requeue(ob)
		}
	}
	for _, pid := range rec.Inbound {
		ss.setInQoS2(pid)
	}
	for _, in := range rec.Unrouted {
		ss.setInQoS2Nonce(in.PacketID, in.Nonce)
	}
	for _, h := range rec.Seen {
		ss.noteOrigin(h)
	}
	for _, d := range rec.Queue {
		if o := d.Msg.Origin(); !o.IsZero() {
			ss.noteOrigin(o.Hash())
		}
	}
}
