package cluster

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/topic"
)

// A session taken from the stream for a connecting client, and the order
// of what it gets.
//
// What publishers held for the session's previous node is older than
// anything forwarded here once the session is in the server (its interest
// announced): a publisher holds a message for a dead node only while it
// does not see the session's interest elsewhere. Adopted first and read
// after, the held messages reached the session behind newer ones that
// publishers forwarded here meanwhile: the order per publisher and topic
// broken ([MQTT-4.6.0-5]; TestClusterFull, 19-252 per run). So the held
// subjects are read ahead, before the session is in the server, and what
// they hold for it is delivered in the same step as the adoption, under
// the gate's write side: no publish here and no forwarded message is
// delivered between the two. What is held after the read ahead (before
// a publisher saw the session's interest here) comes through the
// followers, after: read ahead of the adoption, a subject read first
// (this node's own, say) left the others' reads, seconds under load, for
// messages to be held there meanwhile, which then came behind newer
// forwarded ones (TestClusterFull seeds 41, 42, 44: 14-56 a run;
// TestReproHeldAfterReadAhead). So the session catches up first
// (catchUp): nothing new goes to its client until every held subject was
// read for it once more, from the adoption on, and the held messages go
// ahead of those forwarded meanwhile in its queue.

// heldAhead is one message held for a node, read for a session before the
// session is in the server.
type heldAhead struct {
	k   originKey
	rm  *broker.RemoteMessage
	at  time.Time // when it was held: its Message Expiry counts from then
	had bool      // the session's record holds it already
}

// heldRead is what one node's held subject held for the session.
type heldRead struct {
	node string
	from uint64 // where the read began (0: by time)
	next uint64 // the sequence after the last one read (as readHeld)
	err  error
	msgs []heldAhead
	// kept: this node's own subject, read for the kept copies of its
	// disowned copy from when it lost the id (keptSince); zero for none.
	kept time.Time
	// unreadAt: the earliest a message this read did not reach can have
	// been held (catchUpCap): heldBackMargin before the pass that ended
	// at next began, which read to the stream's end as of then; where
	// the read by time began, for one that failed (its follower reads
	// from there again: joinFollower's again).
	unreadAt time.Time
}

// adoptHeld puts rec, read from the stream for a connecting client (its
// last op written at last, at epoch), in the server together with what
// was held for it since then (above; from behind's place in its node's
// subject, if that op named one: opHeldHeader), and follows the held subjects for heldWatch as
// takeHeld does. begin is asked, just before the session goes in the
// server, whether the claim still stands (owners.beginAdopt): the reads
// take seconds under load, and a newer claim of the id may have come
// meanwhile; if not (nil), nothing is adopted and adoptHeld returns
// false. Its wait is finished once the session has what was held for it
// (as takeHeld's w).
func (s *sessions) adoptHeld(ctx context.Context, rec *broker.StoredSession, last time.Time, epoch uint64, behind heldBehind, begin func() *heldWait, prev ...string) bool {
	n := s.n
	id := rec.ClientID
	// The subjects publishers are holding for now (the dropped nodes',
	// prev's) first, the others after, and the first again from where
	// their read ended (or anew, if it failed: the streams elect leaders
	// after a kill), with a bound of its own: what is held after the
	// read ahead comes behind newer messages (above), so the read ends
	// as close as may be to the adoption.
	dropped := append(slices.Clone(n.remote.orphans.nodes()), prev...)
	// Every node heard from since this one started, gone ones too
	// (takeHeld, heardNodes): the owner record may name a node that
	// claimed the session and never had it.
	others := append(n.remote.heardNodes(), n.cfg.Node)
	slices.Sort(dropped)
	slices.Sort(others)
	dropped = slices.DeleteFunc(slices.Compact(dropped), func(node string) bool { return node == "" })
	others = slices.DeleteFunc(slices.Compact(others), func(node string) bool { return node == "" || slices.Contains(dropped, node) })
	reads := make([]heldRead, 0, len(dropped)+len(others))
	for _, node := range append(dropped, others...) {
		// A node that gave id up before it had settled says where its
		// own applying stopped (takeUnsettled); by time, a message it
		// held before an op it applied later would be passed over.
		from := s.takeHeldFrom(node, id)
		var kept time.Time
		if node == n.cfg.Node && from == 0 {
			kept = s.keptSince(id, epoch)
		}
		// The last op's node had not applied what was held for it from
		// there on (opHeldHeader): by time, that would be passed over.
		if node == behind.node && behind.from > 0 && (from == 0 || behind.from < from) {
			n.log.Info("cluster: a held subject read for a session from where its node's follower stood at the session's last op",
				"client_id", id, "peer", node, "from", behind.from, "last", last)
			from = behind.from
		}
		reads = append(reads, s.readAhead(ctx, node, from, last, kept, rec))
	}
	cctx, cancel := context.WithTimeout(n.ctx, n.cfg.ForwardTimeout)
	defer cancel()
	for i := range dropped {
		r := &reads[i]
		more := s.readAhead(cctx, r.node, r.next, last, r.kept, rec)
		r.msgs, r.next, r.err, r.unreadAt = append(r.msgs, more.msgs...), more.next, more.err, more.unreadAt
	}
	for _, r := range reads {
		n.log.Debug("cluster: messages held for a node read ahead for a session taken from the stream", "client_id", id,
			"peer", r.node, "since", last, "kept_since", r.kept, "next", r.next, "messages", len(r.msgs), "err", r.err)
		if r.err != nil {
			n.log.Warn("cluster: messages held for a node not read yet; following", "client_id", id, "peer", r.node, "err", r.err)
		}
	}
	if n.fault.waitsToAdopt(id) {
		n.log.Info("cluster: test fault: adoption waits after the read ahead", "client_id", id, "for", n.fault.adoptWaitLength())
		select {
		case <-time.After(n.fault.adoptWaitLength()):
		case <-n.ctx.Done():
		}
	}
	if n.fault.adoptsLate(id) {
		n.log.Info("cluster: test fault: adoption held until the client id is claimed again elsewhere", "client_id", id)
		for deadline := time.Now().Add(adoptLateMax); n.own.isUnread(id) && time.Now().Before(deadline) && n.ctx.Err() == nil; {
			time.Sleep(50 * time.Millisecond)
		}
	}
	until := time.Now().Add(n.heldWatch())
	n.gate.Lock()
	w := begin()
	if w == nil {
		n.gate.Unlock()
		n.log.Info("cluster: session taken from the stream not adopted: its client id was claimed again meanwhile", "client_id", id)
		return false
	}
	defer w.finish()
	// Until the catch-up's reads are done, the session's ops here count
	// as made no later than where they begin (catchUpCap).
	capAt := catchUpCap(reads)
	s.capMade(id, capAt, until)
	// Before the adoption replaces this node's disowned copy, if any
	// (copysteps.go).
	if changed, dropped, added, took := s.copySteps(rec, epoch); changed+dropped+added > 0 || took {
		n.log.Info("cluster: a session read from the stream took its disowned copy's last exchange steps here",
			"client_id", id, "epoch", epoch, "deliveries_changed", changed, "deliveries_completed", dropped,
			"deliveries_sent_since", added, "inbound_ids", took)
	} else if changed, dropped, added, took := s.ownCopySteps(rec); changed+dropped+added > 0 || took {
		// What the copy got after the read is the session's now: its
		// held copies are had (deliverAhead), as the copy's watch says.
		for i := range reads {
			for j := range reads[i].msgs {
				h := &reads[i].msgs[j]
				h.had = h.had || recordHas(rec, h.rm)
			}
		}
		n.log.Info("cluster: a session read from the stream took what this node's own copy got since",
			"client_id", id, "epoch", epoch, "deliveries_changed", changed, "deliveries_completed", dropped,
			"deliveries_taken", added, "inbound_ids", took)
	}
	s.adopt(id)
	n.srv.Adopt(rec)
	// w waits for cw too: cw ends the catch-up, then finishes w.
	w.add()
	cw := newHeldWait(nil)
	cw.done = n.catchUp(id, n.cfg.ForwardTimeout, func() {
		s.uncapMadeAt(id, capAt) // the reads are done, what they brought journalled
		w.finish()
	}, cw.unreadFrom)
	defer cw.finish()
	// Watched from here: a message published here from now on reaches
	// the session locally (originWatch.first).
	n.watch.arrive(id, until)
	delivered, expired := 0, 0
	for _, r := range reads {
		for _, h := range r.msgs {
			if n.deliverAhead(id, h) {
				delivered++
			} else {
				expired++
			}
		}
	}
	// Under the gate: every forward of a publish here before the
	// adoption is among them.
	out := n.replies.outTo(func(node, topic string) bool {
		return slices.Contains(dropped, node) && subscribed(rec.Subs, topic)
	})
	// Looked at against rec while the gate keeps deliveries out.
	aheads := n.outAheads(rec, out)
	n.gate.Unlock()
	if delivered+expired > 0 {
		n.log.Debug("cluster: held messages delivered with the session's adoption", "client_id", id,
			"delivered", delivered, "expired_or_had", expired)
	}
	for _, r := range reads {
		prs := slices.DeleteFunc(slices.Clone(out), func(pr *pendingReply) bool { return pr.node != r.node })
		if len(prs) == 0 {
			s.joinFollower(r.node, id, until, r.next, last, heldFloor(r.from, last), r.err != nil, cw)
			continue
		}
		cw.add()
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			defer cw.finish()
			n.deliverTakenLate(id, r.node, s.awaitOut(id, r.node, prs), aheads)
			s.joinFollower(r.node, id, until, r.next, last, heldFloor(r.from, last), r.err != nil, cw)
			s.wakeFollower(r.node)
		}()
	}
	return true
}

// catchUpCap is the earliest time among reads' unreadAt: until the
// catch-up's reads are done, a session taken from the stream has its ops
// here made no later than that (capMade), as a session moved here live
// does until it read its old owner's places (sessions.go, "A session
// moved here whose held reads are not done"). A reader that takes the
// session from the stream reads every held subject by time from its last
// op on; written with their real times, the ops of the adoption and of
// the client told the next reader that what was held before them had
// reached the session, when the holds after the read ahead were still
// the followers' to apply here, and this node's kill lost them
// (test/jepsen TestClusterFull seed 563: ps1 adopted on n1 at 58.718
// after its read of n1's own subject failed, the client's disconnect
// written at 58.822, n1 killed at 58.910 before its followers applied 13
// messages held at 58.250-58.717; the next owner read from 58.822 on:
// TestReproCatchUpKilled). Zero for no reads.
func catchUpCap(reads []heldRead) time.Time {
	var at time.Time
	for _, r := range reads {
		at = minTime(at, r.unreadAt)
	}
	return at
}

// awaitOut waits, up to the catch-up's bound, until this node's forwards
// prs out to node are settled: a forward out to a node that died is held
// for it only once this node drops it (up to routeCheckEvery after its
// routes closed, deadAfter when it went silent), and so after a claim
// that took the session from the stream at once had read node's held
// subject. Read before that, the hold came through the follower after the
// catch-up, behind the publisher's newer messages delivered here
// meanwhile (test/jepsen TestClusterFull seed 53: ps1 got pub0#530, QoS 2,
// forwarded from n1 to n3 2 ms before n3's kill and held for n3 at
// 25.100, after #532 and #536; n1's claim's catch-up had ended at 24.983).
// The follower of node's subject joins after this wait, so its first
// complete read with id, which ends the catch-up, reads those holds.
//
// It returns the forwards node answered as taken meanwhile: after the
// claim read the stream, their ops there may have landed after the read
// (deliverTakenLate).
func (s *sessions) awaitOut(id, node string, prs []*pendingReply) (taken []*pendingReply) {
	n := s.n
	start := time.Now()
	n.log.Info("cluster: a session taken from the stream waits for forwards out to its previous node to be answered or held",
		"client_id", id, "peer", node, "forwards", len(prs))
	t := time.NewTimer(n.cfg.ForwardTimeout)
	defer t.Stop()
	left := 0
	for i, pr := range prs {
		select {
		case <-pr.settled:
			if pr.taken { // written before settled was closed (resolve)
				taken = append(taken, pr)
			}
		case <-t.C:
			left = len(prs) - i
		case <-n.ctx.Done():
			return nil
		}
		if left > 0 {
			break
		}
	}
	if left > 0 {
		n.log.Warn("cluster: forwards out to a session's previous node not settled within the bound; reading what was held for it anyway",
			"client_id", id, "peer", node, "left", left, "bound", n.cfg.ForwardTimeout)
		return taken
	}
	n.log.Info("cluster: forwards out to a session's previous node settled", "client_id", id, "peer", node, "after", time.Since(start),
		"taken", len(taken))
	return taken
}

// outAheads returns, for each forward out (a claim's, awaitOut), its
// message as a held one for the session of rec (deliverAhead): under the
// forward's origin key, so that its copy name is the one node gave its
// copy (deliverForward), and had if rec holds it already. Called under
// the gate's write side, rec just adopted.
func (n *Node) outAheads(rec *broker.StoredSession, prs []*pendingReply) map[*pendingReply]heldAhead {
	if len(prs) == 0 {
		return nil
	}
	aheads := make(map[*pendingReply]heldAhead, len(prs))
	for _, pr := range prs {
		w := pr.out
		if w == nil {
			continue // not a publish's forward (registerOut has one)
		}
		k := originKey{node: n.cfg.Node, inc: n.inc, id: w.msg.ID}
		rm, err := decodeForward(encodeForwardOrigin(w.msg, w.targets[pr.target].groups, w.pub, w.o))
		if err != nil {
			continue // it was encoded for its forward already: cannot happen
		}
		rm.Copy = k.copy()
		aheads[pr] = heldAhead{k: k, rm: rm, at: pr.sentAt, had: recordHas(rec, rm)}
	}
	return aheads
}

// deliverTakenLate delivers to id, here, the forwards out to its previous
// node that node answered as taken after this claim read the stream
// (awaitOut). Taken there, such a message is in no hold, and its op may
// reach the session's stream after the read (the old owner's partition
// stream without a quorum, back from a pause): the record read has it
// not, and a later reader may skip the op (an older epoch) or the adoption's
// rollup removed it. The claim's wait for forwards out covered a forward
// held or refused, not one taken late: lost (TestReproMovedBackHeldHere,
// seen twice in session 27: n3, resumed, took q2-15 live from
// n2 at 25.345 and acknowledged it at 30.017, its op 4.9 s behind
// partition 1's quorum; n2's claim had read the stream at 27.698;
// bench/jepsen/RESULTS.md "mb27"). A QoS 2 copy the session got is not
// delivered again (its copy name, originKey.copy); a QoS 1 copy may come
// twice, when the op landed before the read and the answer after it.
//
// Only the forward's plain part comes here, never its share groups: node
// gave each group's turn to one of its members, and "taken" does not say
// which. Given here too, a group whose turn went to another member there
// reached two members (test/jepsen TestClusterFull seeds 869 and 875,
// session 28: g1 pub1#21, QoS 2, given to g1m0 on n3 and delivered to
// g1m1 on n1 by its claim; bench/jepsen/RESULTS.md "sp847"); a turn that
// went to this session's copy there is its op's, as before mb27.
// TestDeliverTakenLatePlainOnly.
func (n *Node) deliverTakenLate(id, node string, taken []*pendingReply, aheads map[*pendingReply]heldAhead) {
	if len(taken) == 0 {
		return
	}
	delivered := 0
	n.gate.Lock()
	for _, pr := range taken {
		h, ok := aheads[pr]
		// One the routing held for node too comes through the
		// follower that joins after this.
		if !ok || pr.heldPlain {
			continue
		}
		if len(h.rm.Groups) > 0 {
			rm := *h.rm
			rm.Groups = nil
			h.rm = &rm
		}
		if n.deliverAhead(id, h) {
			delivered++
		}
	}
	n.gate.Unlock()
	n.log.Info("cluster: forwards out to a session's previous node taken there after the claim read the stream, delivered here",
		"client_id", id, "peer", node, "taken", len(taken), "delivered", delivered)
}

// readAhead reads node's held subject as readHeld does (from, since), and
// returns the messages for rec's subscriptions, their share groups claimed
// (claimFor) with rec's memberships. A claim that fails ends the read
// there (next): the follower reads on from it. kept, if not zero, is when
// this node's disowned copy of the session began to keep what it took
// (keptSince): the read by time begins there if that is earlier, for the
// kept copies alone.
//
// Read by sequence (from: where the session's last op says its node's
// follower stood, opHeldHeader, or where a node that gave the session up
// unsettled stopped applying), the copies kept for the session there
// before from are read too (readKeptBefore).
//
// unreadKept: a read that fails leaves its unreadAt (catchUpCap) no later
// than keptFrom, not only than where its read by time began: the
// adoption's ops count as made no later than that until its followers
// read what this one did not, and the next reader counts kept copies from
// the last op's made time. Capped where a read by sequence began (the
// read's start then), a kept copy taken before that but after keptFrom
// was passed over by every later reader (test/jepsen TestClusterFull long
// faults, seed 1129: n2's fenced copy of g1m1 kept 23 messages at
// 24:11.6-12.3; n2's claim back read its own subject from its follower's
// place 131 and failed in the kept read before it, "not read yet;
// following", so its rollup was made no later than 17.492, heldBackMargin
// before that read began, not 23:47.1, the session's last op; fenced 0.8 s
// after the adoption, before its follower read them, and every later
// claim read n2's subject from the rollup's place 350 with kept copies
// from 17.492: 11 acknowledged messages lost for g1;
// TestReadAheadKeptBeforePlace). The ops of a claim back that did not read
// its own keep so carry where the keep may begin, as a disown that does
// not end it does here (markLostLocked).
func (s *sessions) readAhead(ctx context.Context, node string, from uint64, since, kept time.Time, rec *broker.StoredSession) heldRead {
	r := heldRead{node: node, from: from, next: from, kept: kept, unreadAt: time.Now().Add(-heldBackMargin)}
	// Kept copies count from the earlier of the two (kept is this node's
	// clock, as their taken times); the read by time starts heldBackMargin
	// before (the stream's clock); holds count from since, as before: one
	// stored before the last op reached the session then.
	keptFrom, start := since, since
	if !kept.IsZero() {
		// Read by sequence (from), the kept copies still count from
		// the earlier of the two.
		keptFrom = minTime(since, kept)
		if from == 0 {
			start = minTime(since, kept.Add(-heldBackMargin))
		}
	}
	// Failed, the read leaves unread what is held from start on and the
	// copies kept from keptFrom on (unreadKept).
	unread := minTime(start, keptFrom)
	s.mu.Lock()
	js := s.js
	s.mu.Unlock()
	if js == nil {
		r.err, r.unreadAt = errNotReady, unread
		return r
	}
	members := map[string]bool{}
	for _, sub := range rec.Subs {
		if strings.HasPrefix(sub.Filter, "$share/") {
			members[sub.Filter] = true
		}
	}
	take := func(m jetstream.Msg, md *jetstream.MsgMetadata) error {
		k, rm, err := decodeHeld(m.Data())
		switch {
		case err != nil:
			s.n.log.Warn("cluster: held message unreadable; skipped", "peer", node, "err", err)
		case heldFor(m) == "" && from == 0 && md.Timestamp.Before(since):
			// A hold read early for the kept copies (above).
		case heldFor(m) != "" && (heldFor(m) != rec.ClientID || heldTime(m, md.Timestamp).Before(keptFrom)):
			// Kept for another session, or taken by the copy before the
			// session's last op (keep.go) and not since this node lost
			// the id (keptSince).
		case subscribed(rec.Subs, rm.Topic):
			h := heldAhead{k: k, rm: rm, at: md.Timestamp, had: recordHas(rec, rm)}
			if err := s.n.fault.aheadClaimUnanswered(s.n, rec.ClientID, rm.Groups, members); err != nil {
				return err
			}
			if rm.Groups, err = s.n.claimFor(k, rm.Origin, rm.Groups, members, h.had, rec.ClientID, heldFor(m)); err != nil {
				return err // the follower reads on from here
			}
			r.msgs = append(r.msgs, h)
		}
		return nil
	}
	if from > 0 {
		next, err := s.readKeptBefore(ctx, js, node, from, keptFrom, rec.ClientID, take)
		if len(r.msgs) > 0 {
			s.n.log.Info("cluster: copies kept for a session before a place by sequence read too", "client_id", rec.ClientID,
				"peer", node, "from", from, "messages", len(r.msgs), "err", err)
		}
		if err != nil {
			r.next, r.err, r.unreadAt = next, err, unread
			return r
		}
	}
	cfg := s.heldReadConfig(node, from, start)
	r.err = readAll(ctx, js, streamName(s.partition(node)), cfg, func(m jetstream.Msg) error {
		md, err := m.Metadata()
		if err != nil {
			return err
		}
		if err := take(m, md); err != nil {
			return err
		}
		r.next = md.Sequence.Stream + 1
		return nil
	})
	if r.err != nil {
		r.unreadAt = unread
	}
	if r.err != nil && !errors.Is(r.err, errClaim) && len(r.msgs) > 0 {
		// Read in part: what was read is delivered, the follower reads
		// on from r.next.
		s.n.log.Debug("cluster: held read ahead cut short", "peer", node, "messages", len(r.msgs), "err", r.err)
	}
	return r
}

// errKeptBeforeEnd ends readKeptBefore's read at its sequence bound.
var errKeptBeforeEnd = errors.New("cluster: kept copies read up to the place")

// readKeptBefore offers take the copies kept for session id (keep.go) in
// node's held subject that are stored before sequence from and were taken
// at keptFrom or later, in order, by a read by time from heldBackMargin
// before keptFrom. A place by sequence is where node's own follower of its
// subject stood (opHeldHeader) or stopped applying (takeUnsettled), and
// that follower gives the kept copies to no session (followOwnHeldOnce):
// they wait for the session's next reader. Read from the place on, a kept
// copy stored before it was passed over by everyone (test/jepsen
// TestClusterFull long faults, seed 614: g0m0's copy kept pub0#50 at
// n2:29 while n2 was claiming the session back; n2's rollup named n2:42,
// its own follower's place, before its read of its kept copies was done;
// n3's claim read n2's subject from 42 and the group never got it;
// TestReadAheadKeptBeforePlace). On an error it returns where the
// follower is to read on from: the kept copy whose claim failed, or from.
func (s *sessions) readKeptBefore(ctx context.Context, js jetstream.JetStream, node string, from uint64, keptFrom time.Time, id string,
	take func(jetstream.Msg, *jetstream.MsgMetadata) error) (uint64, error) {
	next := from
	cfg := s.heldReadConfig(node, 0, keptFrom.Add(-heldBackMargin))
	err := readAll(ctx, js, streamName(s.partition(node)), cfg, func(m jetstream.Msg) error {
		md, err := m.Metadata()
		if err != nil {
			return err
		}
		if md.Sequence.Stream >= from {
			return errKeptBeforeEnd
		}
		if heldFor(m) != id {
			return nil // a hold the place's follower applied, or another session's
		}
		if err := take(m, md); err != nil {
			next = md.Sequence.Stream
			return err
		}
		return nil
	})
	if errors.Is(err, errKeptBeforeEnd) {
		return from, nil
	}
	return next, err
}

// subscribed reports whether one of subs (a share group's filter
// included) matches topic name.
func subscribed(subs []broker.StoredSub, name string) bool {
	for _, sub := range subs {
		f := sub.Filter
		if rest, ok := strings.CutPrefix(f, "$share/"); ok {
			if _, f, ok = strings.Cut(rest, "/"); !ok {
				continue
			}
		}
		if topic.Match(f, name) {
			return true
		}
	}
	return false
}

// recordHas reports whether rec's queue holds rm already (a forward its
// node journalled before it died, whose confirmation died with it, is
// held too: deliverHeld's HasMessage, for a session not in the server).
func recordHas(rec *broker.StoredSession, rm *broker.RemoteMessage) bool {
	return slices.ContainsFunc(rec.Queue, func(d broker.StoredDelivery) bool {
		m := d.Msg
		return m != nil && m.From == rm.From && m.Topic == rm.Topic && string(m.Payload) == string(rm.Payload)
	})
}

// deliverAhead delivers h to id, in the server now, under the gate's write
// side; false if it expired while held or the session had it.
func (n *Node) deliverAhead(id string, h heldAhead) bool {
	if h.had {
		return false
	}
	rm := h.rm
	if rm.ExpiresIn > 0 {
		if rm.ExpiresIn -= time.Since(h.at); rm.ExpiresIn <= 0 {
			return false // expired while held [MQTT-3.3.2-5]
		}
	}
	rm.Pick = n.dedupPickHeld(h.k, func(c string) bool { return c == id }, "")
	rm.PickShared = true // a group goes to this session only
	// Ahead of what is forwarded to the session while it catches up.
	rm.Place, rm.Late = h.k.place(), true
	// Acknowledged to its publisher once held: the session's queue limit
	// applies to new messages, not to these, all delivered at once here
	// (seen: 1,028 held while the claim waited for the stream, one
	// dropped as queue_full).
	rm.Accepted = true
	n.srv.DeliverRemote(rm)
	return true
}
