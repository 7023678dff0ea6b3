package broker

import "time"

// sweepBudget bounds the queued messages one sweep examines, so that a
// sweep holds each session lock briefly and never takes long in all: with
// many sessions a pass spreads over several ticks.
const sweepBudget = 100000

// sweepLoop removes queued messages whose Message Expiry passed from
// offline sessions every Options.ExpirySweep, until Shutdown. Without it an
// expired message would stay in memory and in the store until its client
// reconnected, which may be never before the session expires.
func (s *Server) sweepLoop() {
	defer s.bgWG.Done()
	t := time.NewTicker(s.opts.ExpirySweep)
	defer t.Stop()
	var pending []*session // the rest of a pass the budget cut short
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		if len(pending) == 0 {
			pending = s.sessionList()
		}
		pending = s.sweep(pending, time.Now(), sweepBudget)
	}
}

// sweep drops expired queued messages of the offline sessions in list
// until budget messages were examined, and returns the sessions it did not
// get to.
func (s *Server) sweep(list []*session, now time.Time, budget int) []*session {
	for i, ss := range list {
		if budget <= 0 {
			return list[i:]
		}
		budget -= 1 + ss.dropExpired(now)
	}
	return nil
}

// dropExpired removes the queued messages whose Message Expiry passed
// [MQTT-3.3.2-5] from an offline session, counting each as DropExpired and
// deleting it from the store. It returns how many messages it examined.
// Inflight messages stay: their onward delivery has started.
func (ss *session) dropExpired(now time.Time) int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.ended || ss.conn != nil || ss.qexpiring == 0 {
		return 0
	}
	q := ss.queue[ss.qhead:]
	w := 0
	for _, ob := range q {
		if ob.msg.expired(now) {
			ss.noteDrop(DropExpired)
			ss.unqueue(ob)
			ss.recordDone(ob)
			continue
		}
		q[w] = ob
		w++
	}
	clear(q[w:])
	ss.queue = ss.queue[:ss.qhead+w]
	return len(q)
}
