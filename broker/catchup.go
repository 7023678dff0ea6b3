package broker

// A session catching up: one a cluster just took over from its replicated
// record while other nodes may still be holding messages for it.
//
// Messages published while no node served the session are kept for it
// elsewhere (held) and reach it only when the cluster reads them, which
// may be after publishers already forward their newer messages to it
// here. Sent as they come, a held message would reach the client after a
// newer one of the same publisher and topic [MQTT-4.6.0-5]. So the
// cluster can have the session catch up first (CatchUp): until it says the
// held messages are in, nothing new is sent to the client; what is routed
// to the session meanwhile is queued (and journalled) as always, and a
// message marked Late (held) is put ahead of what was routed since the
// catch-up began, behind only the older messages of its own publisher
// (Place), and ahead of its publisher's newer ones that were queued before
// the catch-up began (an adopted queue: anchor). Then sending starts, in
// queue order.
//
// The queue's order must survive the store too: a restart, or a node
// that reads the session's record, rebuilds the queue in store sequence
// order. A message routed during the catch-up gets its sequence with a
// gap of catchGap before it (nextSeq moves on by catchGap), so that a
// Late one put before it can take a sequence between its neighbours;
// where that room is used up, the messages from its place on take new
// sequences past the end (respace), so the queue and the store keep the
// same order whatever comes in what order.
//
// Sessions that never catch up pay a nil check per delivery and per fill.

// catchGap is the room of store sequences left before each message queued
// last while a session catches up (above), and catchStep what a Late
// message that follows its publisher's previous one takes of the room
// after it (less, when less is left); a Late message that follows none
// takes the middle of its room (between): room for 2^15 Late messages in
// a row at one place (one read brings about a thousand), as many before
// a newer one of their publisher read first, and for about 23 put each
// before the last, should one publisher's come in reverse.
const (
	catchGap  = 1 << 24
	catchStep = 1 << 8
)

// Place is where a message stands among the messages of one publisher: a
// larger Seq from the same Source was published later.
type Place struct {
	Source string
	Seq    uint64
}

// catchUp is a catching-up session's state (session.in2.catch, nil for
// none); its session's mu guards it.
type catchUp struct {
	base uint64 // nextSeq when the catch-up began
	gap  uint64 // catchGap and catchStep (a test makes them small)
	step uint64
	// places: the queued messages routed since the catch-up began, Late
	// or not, with their Place (zero when unknown).
	places map[*outbound]placed
	// refs: the CatchUp calls of this catch-up whose end was not called.
	refs int
}

type placed struct {
	Place
	late bool
}

// CatchUp makes clientID's session send nothing new to its client until
// end is called (see above): the cluster calls it right after Adopt,
// before anything else is routed to the session, and end once the
// messages held for the session are delivered (or its bound passed). end
// may be called more than once, and from any goroutine; it does nothing
// once the session has ended or was replaced. CatchUp returns nil when
// there is no such session.
//
// A CatchUp while the session is catching up already joins that
// catch-up, and sending starts once the end of every CatchUp joined was
// called: the messages routed to the session since it began keep their
// place ahead of which a Late one goes. A new catch-up in its stead
// forgot them, and a held message put after them came after newer ones
// of its publisher (a restarted node's restored sessions catch up from
// their restore and again from their settle: package cluster, and
// test/jepsen TestClusterFull seed 58, 2026-12-06).
func (s *Server) CatchUp(clientID string) (end func()) {
	s.mu.Lock()
	ss := s.sessions[clientID]
	s.mu.Unlock()
	if ss == nil {
		return nil
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.ended {
		return nil
	}
	c := ss.catching()
	if c == nil {
		c = &catchUp{base: ss.nextSeq, gap: catchGap, step: catchStep, places: map[*outbound]placed{}}
		c.anchor(ss.queue[ss.qhead:])
		if ss.in2 == nil {
			ss.in2 = &inbound2{}
		}
		ss.in2.catch = c
	}
	c.refs++
	ended := false // this CatchUp's end; ss.mu guards it
	return func() {
		ss.mu.Lock()
		defer ss.mu.Unlock()
		if ended || ss.in2.catch != c {
			ended = true
			return
		}
		ended = true
		if c.refs--; c.refs > 0 {
			return
		}
		ss.in2.catch = nil
		if !ss.ended {
			ss.fill()
		}
	}
}

// anchor registers the queued messages q (not sent yet, queued before the
// catch-up began: an adopted session's queue, or what a returning node's
// session had) with their places, as Late ones: a Late message goes
// before a newer one of its own publisher among them and behind an older
// one, and otherwise behind them all, as before. Unregistered, an adopted
// queue's messages had no place, and what was held for the session went
// behind the whole queue, its publisher's newer messages in it included
// (bench/jepsen/RESULTS.md, Session 26, long faults seed 605:
// TestCatchUpAdoptedAnchors, TestReproPausedOwnerMovesLive). Messages
// without a place are left out: nothing orders against them.
func (c *catchUp) anchor(q []*outbound) {
	for _, ob := range q {
		if p := ob.msg.place(); p.Source != "" {
			c.places[ob] = placed{Place: p, late: true}
		}
	}
}

// catching returns the session's catch-up, nil when it is not catching up
// (every session but a few just adopted). ss.mu must be held.
func (ss *session) catching() *catchUp {
	if ss.in2 == nil {
		return nil
	}
	return ss.in2.catch
}

// catchUpDeliver queues ob, routed to ss while it catches up, and returns
// the store ticket of its queue entry. ss.mu must be held.
func (ss *session) catchUpDeliver(ob *outbound) Ticket {
	journal := ss.persisted() && (ob.qos > 0 || ss.conn == nil)
	p := placed{Place: ob.msg.place(), late: ob.msg.late()}
	if !ss.enqueue(ob) {
		return 0
	}
	c := ss.in2.catch
	c.places[ob] = p
	q := ss.queue[ss.qhead:]
	at := len(q) - 1
	if p.late {
		at = c.slot(q[:len(q)-1], p.Place)
	}
	if at == len(q)-1 {
		// Last: a sequence of its own, with room before it.
		if journal {
			ss.nextSeq += c.gap
			ob.seq = ss.nextSeq
		}
		return ss.recordDelivery(ob)
	}
	if journal {
		lo, hi := max(seqBefore(q, at), c.base), seqFrom(q, at)
		switch {
		case hi == 0:
			// Nothing journalled behind it.
			ss.nextSeq += c.gap
			ob.seq = ss.nextSeq
		case lo+1 >= hi:
			// No room left between its neighbours (the gap used up):
			// the ones from its place on move past the end, so that it
			// still goes there (respace).
			moved := ss.respace(q[at : len(q)-1])
			ss.srv.log.Info("catch-up: queued messages given new store sequences to make room for a held one",
				"client_id", ss.id, "topic", ob.msg.Topic, "moved", moved, "at", at, "queued", len(q)-1)
			hi = seqFrom(q, at)
			ob.seq = c.between(lo, hi, false)
		default:
			ob.seq = c.between(lo, hi, c.follows(q, at, p.Place))
		}
	}
	copy(q[at+1:], q[at:len(q)-1])
	q[at] = ob
	return ss.recordDelivery(ob)
}

// between returns the store sequence of a Late message put between
// sequences lo and hi (lo+1 < hi). One that follows its publisher's
// previous one (after) takes catchStep past it, leaving the rest for its
// publisher's next ones, which come in order. Any other takes the middle:
// its publisher's older ones may come next and go before it, one after
// another, and its newer ones after it. (Always catchStep past lo, a
// newer one read first stood catchStep past its predecessor, and the
// older ones that came next, each behind the last, halved those 256 until
// the 9th found none: TestCatchUpRoomBehindNewer.)
func (c *catchUp) between(lo, hi uint64, after bool) uint64 {
	if after {
		return lo + min(c.step, (hi-lo)/2)
	}
	return lo + (hi-lo)/2
}

// follows reports whether the message before index at of q is an older
// one of p's publisher, routed since the catch-up began.
func (c *catchUp) follows(q []*outbound, at int, p Place) bool {
	if at == 0 || p.Source == "" {
		return false
	}
	o, ok := c.places[q[at-1]]
	return ok && o.Source == p.Source && o.Seq < p.Seq
}

// respace gives the journalled messages of tail (the queue from a Late
// message's place on) new store sequences past the end, each with the
// gap before it, in their order, and journals each move (the new entry,
// then the old one's delete: a crash between the two leaves a message
// queued twice, never none); it returns how many moved. A Late message
// without room at its place went last before: out of its publisher's
// order, and every newer Late one of that publisher came behind it
// (slot), newer forwarded messages ahead of them all
// (TestReproFenceWindowLifted under load: one message without room, 62
// delivered after newer ones). ss.mu must be held.
func (ss *session) respace(tail []*outbound) int {
	c := ss.in2.catch
	ops := make([]Op, 0, 2*len(tail))
	for _, ob := range tail {
		if ob.seq == 0 {
			continue
		}
		old := ob.seq
		ss.nextSeq += c.gap
		ob.seq = ss.nextSeq
		ops = append(ops, Op{ClientID: ss.id, Kind: OpQueuePut, Delivery: ob.stored()},
			Op{ClientID: ss.id, Kind: OpQueueDel, Delivery: StoredDelivery{Seq: old}})
	}
	if len(ops) > 0 {
		ss.srv.opts.Store.Append(ops...)
	}
	return len(ops) / 2
}

// slot returns where in q (the queue, without the message being placed) a
// Late message of place p goes: ahead of every message routed since the
// catch-up began that is not Late itself, and of its own publisher's
// newer ones, but behind its own publisher's older ones. len(q) when that
// is the end.
func (c *catchUp) slot(q []*outbound, p Place) int {
	at := len(q)
	for i, ob := range q {
		if o, ok := c.places[ob]; ok && !o.late {
			at = i
			break
		}
	}
	if p.Source == "" {
		return at
	}
	for i := range at {
		if o, ok := c.places[q[i]]; ok && o.Source == p.Source && o.Seq > p.Seq {
			at = i
			break
		}
	}
	for i := len(q) - 1; i >= at; i-- {
		if o, ok := c.places[q[i]]; ok && o.Source == p.Source && o.Seq < p.Seq {
			return i + 1
		}
	}
	return at
}

// seqBefore returns the store sequence of the last journalled message in
// q before index at, 0 for none.
func seqBefore(q []*outbound, at int) uint64 {
	for i := at - 1; i >= 0; i-- {
		if q[i].seq != 0 {
			return q[i].seq
		}
	}
	return 0
}

// seqFrom returns the store sequence of the first journalled message in q
// from index at on (q's last one, being placed, excluded), 0 for none.
func seqFrom(q []*outbound, at int) uint64 {
	for i := at; i < len(q)-1; i++ {
		if q[i].seq != 0 {
			return q[i].seq
		}
	}
	return 0
}
