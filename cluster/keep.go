package cluster

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/roost-mqtt/roost/broker"
)

// What a copy whose ops stay local takes: kept in the held subject.
//
// Once another node claims a client id, this node's copy of the session
// is disowned (sessions.lost): its ops stay in the local store, since in
// the stream a reader would take them, its end included, for the
// session's current state. The copy stays a while, fenced or handed over
// and waiting for the new owner's confirmation, and still takes what is
// routed to it: every node forwards the session's filters here until it
// sees the new owner's interest, and a new owner that never adopts it
// (its claim given up, superseded, or answered too late) announces none.
// When the copy then ends without a confirmed handover, what it took
// since the disown is nowhere else: acknowledged and lost (test/jepsen
// TestClusterFull, 2026-12-05 round 4 seed 41: ps2 fenced on n2 for n1's
// claim, which gave up; the copy ended 8 s later with 191 acknowledged
// messages; earlier seed 41 ps0, 179).
//
// So a QoS 1/2 message this node gives such a copy (forwarded, or
// published here) is also appended to this node's held subject, marked
// for that session alone (heldForHeader), and its confirmation (to the
// forwarding node, or the PUBACK/PUBREC here) waits for the append as for
// the copy's store. Whoever takes the session next reads it there: a
// claim or an adoption reads every node's held subject since the
// session's last op in the stream, which is older than the disown (by
// when its ops were made, opMadeHeader: the disowned node's own ops from
// before the disown may be stored after it), and
// follows them for heldWatch; this node itself, should the fence lift,
// reads its own subject when it takes the session from the stream again.
// The marked copy carries the message's origin (node, incarnation, id),
// so a reader that got the message forwarded too delivers it once
// (originWatch), and the catch-up puts it in its publisher's order
// (catchup.go). A marked copy goes to no other session: readers of the
// subject for other sessions skip it, and this node's own follower
// (followOwnHeld), which applies held messages to the sessions here,
// skips them all: the copy here has the message already. An unmarked
// one it gives the copy as to any session here (ownHeldTo): a live move
// carries it, and a claim that reads the stream reads it here again (a
// group's claim made for the session is its own: ownClaim).
//
// The broker says which copies a message reached when it matches it
// (AwayMembers, RemoteMessage.Away; broker.AwayCopies), and an ending
// copy leaves the subscription tree before its OpSessionDel takes it
// out of the set: asked later, a copy that ended in between took the
// message and was not kept.
//
// Only while the copy is the disowned one: the mark goes when the copy
// ends (its OpSessionDel: handed over and confirmed, fenced and ended, or
// replaced by the session read from the stream), when its session moves
// out live (finish: it takes nothing more), or when a claim here lets the
// client resume it as it is (its next OpSessionPut).
//
// Share groups. A disowned copy is still a member of its session's
// groups here, and the broker chose members without knowing it: a
// group's message given to it ended with the copy (TestClusterFull seed
// 42: 27 acknowledged messages lost for g0; TestReproFenceWindowGroup:
// 336 of 448). Now the broker asks (broker.AwayCopies: Node.Away) and
// gives a group's message to such a copy only when the group has no
// other member on this node; when it does, it says so (the message's
// AwayMembers here, RemoteMessage.Away for a forwarded one), and the
// kept copy names those groups. The session's next owner then takes it
// as the member it is: its reader claims the message for the group
// (claimFor, the claim a dead node's held group message gets, under the
// same id) and gives it to the session alone; QoS 2 reaches the group
// once, because this node gave the group's only copy to this session.
// Not chosen: passing the message on to a node with a live member (MQTT
// 5 section 4.8.2 allows either). The copy is disowned because its
// client is connecting elsewhere, whose reader gives it the message
// within moments; an offline persistent member gets its share as on one
// node (broker pickShared); and a second hop would need a confirmation
// chain of its own, a way back to keeping when the other node's members
// are disowned copies too, and a way to tell its copy from a kept one
// for QoS 2.
//
// What the copy takes reaches its session later than what publishers send
// the session's new node directly: through the live move's export, which
// the new owner delivers before what it held, or through this node's held
// subject, which the new owner reads behind its forwards. Given a group's
// turns by a publisher elsewhere, the member got that publisher's messages
// out of their order (test/jepsen TestClusterFull seeds 44 and 47,
// 2026-12-06: g0m1). So from the disown to the copy's end the node
// announces an away key per share group of the copy (persistent.go
// awayKey), and publishers elsewhere leave this node out of the group's
// turns while another node serves the group (remoteInterest.serving).
// A message published here still goes to the copy when the group has no
// other member here (local members first).
//
// A QoS 2 resend under the same Origin, routed after the copy ended, may
// reach a live member of the group elsewhere, where nothing knows of the
// kept copy: the node serving the group for a resend (the forward's
// resend flag, wire.go) claims it under the Origin the way readers do
// (ClaimGroup) before a live member gets it, and leaves the group out if
// a reader claimed it first; a reader that finds the resend's claim
// leaves its copy (ownClaim: not its session's). A resend given to an
// away copy again is kept and left to its reader's claim. And the node
// that gave the group's copy to a disowned copy does not note the group
// as served under the Origin (broker matchOnce): noted, its own reader of
// the kept copy, the session's next owner here, left it (lost). Still
// open: a first routing to a live member and a resend to a kept copy
// elsewhere, since first routings claim nothing (bench/jepsen/RESULTS.md,
// "Share-group resends").
//
// Before this (and after fencehold's hold keys from the fence, which made
// every node hold every matching message for the fenced node, 311 QoS 2
// duplicates in one run), the fence kept only the filters as hold keys
// from the copy's end (fence.go), which covers what is published after
// the end, not what the copy took before it.

// heldForHeader names, on a held message, the one session it is kept for
// (keep). Older readers ignore it and offer the message to every session
// of the subject's node that matches; a cluster of mixed versions may so
// deliver a kept copy twice.
const heldForHeader = "Roost-Held-For"

// heldTakenHeader is when the copy took a kept message (Unix nanoseconds):
// readers compare that, not when the append was stored, with the
// session's last op in the stream (heldTime). A new owner that adopted
// the copy by a handover has what the copy took before, whenever the
// append was stored: one stored late (its partition stream electing a
// leader) and read by a later claim whose record ends between the two
// times would reach the session twice.
const heldTakenHeader = "Roost-Held-Taken"

// keptCopies is the set of client ids whose session here is a disowned
// copy (above), each with the count of messages kept for it: copied on
// write under sessions.mu, read without a lock (the broker asks Away
// under its subscription tree's lock).
type keptCopies struct {
	ids atomic.Pointer[map[string]*atomic.Int64]
}

// has reports whether id is in the set.
func (k *keptCopies) has(id string) bool {
	m := k.ids.Load()
	if m == nil {
		return false
	}
	_, ok := (*m)[id]
	return ok
}

// taken returns how many messages were kept for id, 0 if it is not in
// the set.
func (k *keptCopies) taken(id string) int64 {
	if m := k.ids.Load(); m != nil {
		if c := (*m)[id]; c != nil {
			return c.Load()
		}
	}
	return 0
}

// count counts a message kept for id, if it is in the set, and returns
// how many were kept for it (0 if it is not).
func (k *keptCopies) count(id string) int64 {
	if m := k.ids.Load(); m != nil {
		if c := (*m)[id]; c != nil {
			return c.Add(1)
		}
	}
	return 0
}

// set adds (in) or removes id, and returns how many messages were kept
// for a removed one; the caller holds sessions.mu.
func (k *keptCopies) set(id string, in bool) int64 {
	old := k.ids.Load()
	var c *atomic.Int64
	if old != nil {
		c = (*old)[id]
	}
	if (c != nil) == in {
		return 0
	}
	m := make(map[string]*atomic.Int64, 1)
	if old != nil {
		for other, n := range *old {
			m[other] = n
		}
	}
	if in {
		m[id] = new(atomic.Int64)
	} else {
		delete(m, id)
	}
	k.ids.Store(&m)
	if c == nil {
		return 0
	}
	return c.Load()
}

// keepOp updates the set for op, about to be appended; s.mu held. lost
// says op's id is disowned here now.
func (s *sessions) keepOp(op *broker.Op, lost bool) {
	switch op.Kind {
	case broker.OpSessionDel:
		s.unkeepLocked(op.ClientID, "the copy ended", true) // or was replaced
	case broker.OpSessionPut:
		if !lost {
			s.unkeepLocked(op.ClientID, "its client resumed it here", false)
		}
	}
}

// unkeepLocked takes id out of the set, saying so when messages were
// kept for it; s.mu held. unread says that nothing carried what the copy
// kept to the session (it ended, not resumed here nor moved out live):
// noted for a live move back here (keptUnread).
func (s *sessions) unkeepLocked(id, why string, unread bool) {
	s.persist.awayOff(id)
	delete(s.fencedCopy, id)
	n := s.kept.set(id, false)
	if n > 0 && s.n != nil {
		s.n.log.Info("cluster: messages a disowned copy took were kept in the held subject for its session",
			"client_id", id, "messages", n, "until", why)
	}
	switch m, ok := s.lostFrom[id]; {
	case !unread:
		delete(s.unread, id)
	case n > 0 && ok:
		if s.unread == nil {
			s.unread = map[string]time.Time{}
		}
		s.unread[id] = m.at
	}
	s.announceKeptLocked(id)
}

// unkeep takes id out of the set: its session moved out live, and the
// copy here takes nothing more (handover_live.go finish).
func (s *sessions) unkeep(id string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	s.unkeepLocked(id, "its session moved out", false)
	if s.movedLive == nil {
		s.movedLive = map[string]bool{}
	}
	s.movedLive[id] = true
	s.mu.Unlock()
}

// endedUnmoved reports whether id was lost here, at the time returned,
// and its copy here is gone without a live move out since this node's
// last claim (keepHeld): a fence's end, or a handover never confirmed.
func (s *sessions) endedUnmoved(id string) (time.Time, bool) {
	if s.n.srv.HasSession(id) {
		return time.Time{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	at, ok := s.lost[id]
	return at, ok && !s.movedLive[id]
}

// A claim back onto this node that reads the stream. Its read of the held
// subjects starts at the session's last op in the stream, and a kept copy
// taken before that op is left out: the op is a newer owner's, which had
// the copy's messages (handed over, or read here). But the last op may be
// this node's own, written before it lost the id and stored after:
// appended while the partition stream had no quorum, and sent once it
// came back (test/jepsen TestClusterFull seed 52 on main, session 21:
// n3's QueuePuts of epochs 11 and 12 for ps1 stored at 13:27:21.428-432,
// 177 ms after n1's claim fenced n3's copy, which kept pub1#382 at
// 21.259; n3's claim back at epoch 14 read its own subject from 21.432
// and left the kept copy out, and so did n2's claim after n3's kill:
// acknowledged and lost). What this node's copy took after it lost the
// id is in no op of the record unless an owner of a newer epoch wrote
// ops, so the claim back reads its own subject for the kept copies from
// the loss on (readAhead).
//
// The copy may have ended since (fenceGrace): what it kept is still
// only in the held subject.
//
// From the first loss since this node's last claim: a newer claim
// elsewhere disowns the copy again and it keeps on keeping (TestClusterFull
// seed 50 on branch ps52: n1's copy of ps2 disowned at 41.94, 42.20, 42.31
// and 42.99; read from the last, the kept copies of 41.94-42.06 were
// left out).
//
// keptSince returns when this node first lost id since its last claim of
// it, if the record read from the stream ends at epoch, no newer than
// this node's claim then (no later owner wrote, so none had what the copy
// kept); zero otherwise.
func (s *sessions) keptSince(id string, epoch uint64) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.lostFrom[id]
	if !ok || epoch > m.epoch {
		return time.Time{}
	}
	return m.at
}

// A claim back onto this node. A live move out of here hands the new
// owner what the disowned copy took until the move's finish (rec2), and
// the kept copies are for a claim that reads the stream. But a client
// that gives up on its CONNACK at the new owner and comes back here
// claims the id here again before that move finished: the finish is
// declined (finish: claimed here again since), the new owner takes what
// was handed over first (finishAt), and hands
// that over to this node in its turn, which adopts it in place of its
// copy. What the copy kept since its disown was then read by nobody: the
// move read no held subject, and this node's own follower gives a
// disowned copy nothing (test/jepsen TestClusterFull seed 44 with long
// faults, ps2: 9-10 acknowledged messages lost; TestReproHeldBackClaim:
// every message published on this node in the window). So the declined
// finish notes where the keep began (holdBack: the disown), and the move
// that brings the session back here reads this node's held subject from
// there for it (takeHeldBack: a handed place, followHanded), as it reads
// the places an old owner names whose held reads were cut: the kept
// copies are for its session, the holds for this node since were given
// to the copy or to nobody, the catch-up puts them in their publishers'
// order, and what the adopted state holds already is left out. Only what
// it holds: the forwards the disowned copy took were noted as the
// session's (originWatch), and the read must not take their kept copies
// for had (originWatch.forgetAway).
//
// heldBackMargin moves a read by time that far before the disown: the
// stream's timestamps are its leader's clock, the disown this node's; the
// floor (the disown, compared with a kept copy's taken time, this node's
// clock too) keeps what is before it out.
const heldBackMargin = time.Second

// holdBack notes, for a live move's finish declined because this node
// claimed id back, that its disowned copy's keep went to no new owner.
func (s *sessions) holdBack(id string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	at, ok := s.left[id]
	if !ok || !s.kept.has(id) {
		return
	}
	if s.heldBack == nil {
		s.heldBack = map[string]time.Time{}
	}
	s.heldBack[id] = at
	for k, t := range s.heldBack {
		if time.Since(t) > arrivedKeep {
			delete(s.heldBack, k)
		}
	}
}

// takeHeldBack returns handed, the held places a live move of id here
// reads on from (cutPositions), with this node's own held subject from
// where its copy's keep began if a finish was declined for it (holdBack),
// or else from the loss if its copy here kept messages that nothing
// carried to the session (keptUnread). A place the old owner named for
// this node's subject stays: its followers read up to there for the
// session, which is handed over; from there on it is read for the kept
// copies too (keptUncarried).
func (s *sessions) takeHeldBack(id string, handed []heldPos) []heldPos {
	s.mu.Lock()
	at, ok := s.heldBack[id]
	delete(s.heldBack, id)
	msg := "cluster: a session claimed back here reads what its disowned copy here kept"
	if !ok {
		at, ok = s.keptUnreadLocked(id)
		msg = "cluster: a session moved here reads what its fenced copy here kept"
	}
	delete(s.unread, id)
	s.announceKeptLocked(id)
	s.mu.Unlock()
	self := s.n.cfg.Node
	if !ok {
		return handed
	}
	s.n.watch.forgetAway(id) // the kept copies are not had here (TestOriginWatchClaimBack)
	if slices.ContainsFunc(handed, func(p heldPos) bool { return p.node == self }) {
		return s.keptUncarried(id, self, at.Add(-heldBackMargin), handed)
	}
	s.n.log.Info(msg, "client_id", id, "since", at.UTC().Format(time.RFC3339Nano))
	return append(slices.Clone(handed), heldPos{node: self, since: at.Add(-heldBackMargin), floor: at})
}

// keptUncarried returns handed with node's place read for the kept copies
// too (copyHas unset), from when (keptFrom). A place named for a node's
// own subject skips what is kept there for a disowned copy, as in the
// copy that moved; but a move whose finish never came carries only what
// was handed over first, and what the copy kept after that answer is in
// no copy that moves: it is read from there or lost
// (TestReproGroupKeptLocal with the old
// owner's subject named at its answer: n2 claimed the session back
// before n3's finish, n3 moved it back naming n2's place, and every
// message n2's disowned copy kept after its answer, 204-218 of 264, was
// skipped; TestReproKeptNamedClaimBack). What the adopted state holds
// already is left out by the read as for any place (HasMessage, Seen).
//
// The place is given by a sequence, which holds no time for the made cap
// of this node's ops (handedFloor): they counted as made at the
// adoption, and should this node lose the id before its follower read
// there (a claim back whose release request it answered late), the next
// owner read the stream from the adoption on and passed over what the
// copy kept between its answer and the adoption (TestReproKeptNamedClaimBack
// on main, session 24: n2 answered n3 at 54.672, n3 adopted at 55.502
// with n2's place n2:11, its follower stalled; n2's claim back gave up
// on n3's answer and read its own subject from 55.502: 52 of 132
// lost). So the place says from when (from: the old owner asked to let
// go, or the copy's disown, less heldBackMargin) the keep went with no
// move, as keptBy's place by time does.
func (s *sessions) keptUncarried(id, node string, from time.Time, handed []heldPos) []heldPos {
	i := slices.IndexFunc(handed, func(p heldPos) bool { return p.node == node })
	if i < 0 {
		return handed
	}
	out := slices.Clone(handed)
	if out[i].copyHas {
		s.n.log.Info("cluster: a named place read for what a disowned copy kept: the move's finish carried none of it",
			"client_id", id, "peer", node, "from", out[i].from, "kept_from", from.UTC().Format(time.RFC3339Nano))
		out[i].copyHas = false
	}
	// Whether or not the place skipped the kept copies: by sequence, it
	// gives the made cap no time.
	out[i].keptFrom = from
	s.n.log.Debug("cluster: a named place's made cap counts from the keep no move carried",
		"client_id", id, "peer", node, "from", out[i].from, "kept_from", from.UTC().Format(time.RFC3339Nano))
	return out
}

// A live move onto the node of a copy disowned without a move out. A
// node that did not see a claim in time (paused, cut off) fences its copy
// when it sees the owner record, often long after the claim: the new
// owner read the session from the stream then, and may have moved it on
// live since. The fenced copy is still a member of its share groups here,
// and a group's message published here (local members first) or given
// this node's turn goes to it and is kept in the held subject for the
// session (above), for a reader of the stream; but an owner that has the
// session by a live move reads no held subject, and one that took it
// from the stream follows this node's subject only for heldWatch and
// only until it hands the session on. When the session then comes here
// by a live move, its old owner names no place of this node's subject,
// and nobody read what the copy kept (test/jepsen TestClusterFull seed 51
// on main, session 22: n3 paused with g0m0's copy, fenced it when it ran
// again, gave it 23 group messages in 0.75 s, n3's publishes and n2's
// turns; n3 claimed g0m0 from n1 and moved it in live, "messages=0
// held=0": 21 acknowledged lost for g0; TestReproKeptCopyMoveIn). So the
// move reads this node's held subject for the session from the loss, as
// for a declined finish: the kept copies are the session's, and what the
// adopted state holds already is left out.
//
// keptUnreadLocked returns when this node lost id since its last claim
// if its copy here kept messages since, still here or ended without
// handing them on (unkeepLocked); s.mu held.
func (s *sessions) keptUnreadLocked(id string) (time.Time, bool) {
	m, ok := s.lostFrom[id]
	if !ok {
		return time.Time{}, false
	}
	if t, ended := s.unread[id]; s.kept.taken(id) > 0 || ended && t.Equal(m.at) {
		return m.at, true
	}
	return time.Time{}, false
}

// A claim back that did not read the keep. This node's claim of a lost
// id ends the loss (setEpoch), but not the keep: a claim that waits for
// its previous owner, or is superseded before it adopts, reads nothing,
// and the copy, still here and still disowned, goes on keeping what it
// takes. The next loss is then a first one again, and stamped anew, the
// keep's place moved past every message kept before it: read from there,
// they were read by nobody (test/jepsen TestClusterFull long faults, seed
// 1114: n1's copy of g1m0 fenced at 51.267, n1's claim back at 54.149
// waited on a paused n3 while the copy kept pub1#242-#247 at
// 56.946-57.208; n2's claim at 57.760 stamped the loss anew, and n1's
// live move in at 02:14 read its own subject from 57.760: 6 acknowledged
// messages lost for g1; TestKeptUnread). So a first loss whose copy still
// has kept messages unread from an earlier one (keptUnreadLocked) keeps
// that loss's time, under the epoch of this node's claim now: the ops
// that claim wrote, if any, did not read them either (keptSince).

// markLostLocked notes this node's first loss of id since its last claim,
// now (disown); s.mu held.
func (s *sessions) markLostLocked(id string, now time.Time) {
	at := now
	if t, unread := s.keptUnreadLocked(id); unread {
		at = t
	}
	if s.lostFrom == nil {
		s.lostFrom = map[string]lostMark{}
	}
	s.lostFrom[id] = lostMark{at, s.epochs[id]}
}

// A move whose old owner did not finish. The new owner of a live move
// takes what the old owner handed over first (finishAt) when the old
// owner does not answer the finish:
// killed, paused or cut off since its answer, or claimed back there
// (above). The old owner's copy was disowned when it answered, and what
// it took since is in neither: it was kept in the old owner's held
// subject for the session, and the move read no held subject
// (TestReproHeldBackGone: every message the copy kept before its node
// was killed). So the move reads the old owner's held subject for the
// session from when the old owner was asked to let go (keptBy: a handed
// place, followHanded), as for the places an old owner names.
//
// keptBy returns handed with prev's held subject from asked (less
// heldBackMargin: prev's clock took the kept copies' times) for id's
// session moving here from prev, which did not finish the move. A place
// prev named for its own subject stays: everything before it was read
// for the session there, the copy's keep included; from there on it is
// read for the kept copies too (keptUncarried).
func (s *sessions) keptBy(prev, id string, asked time.Time, handed []heldPos) []heldPos {
	if slices.ContainsFunc(handed, func(p heldPos) bool { return p.node == prev }) {
		return s.keptUncarried(id, prev, asked.Add(-heldBackMargin), handed)
	}
	from := asked.Add(-heldBackMargin)
	s.n.log.Info("cluster: a session moved here without its previous owner's finish reads what that owner's copy kept",
		"client_id", id, "peer", prev, "since", from.UTC().Format(time.RFC3339Nano))
	return append(slices.Clone(handed), heldPos{node: prev, since: from, floor: from})
}

// keptCopy is one disowned copy here that a QoS 1/2 message reached,
// with the share groups ("group\x00filter") it got the message for: the
// broker gives a group's message to such a copy only when the group has
// no other member here (broker.AwayCopies).
type keptCopy struct {
	id     string
	groups []string
}

// Away implements broker.AwayCopies: the session of id here is a
// disowned copy, or a restored one not settled yet (held.go,
// restoredGate). Such a copy may be stale, and is dropped when another
// node owns the session or claims it before the settle (takeUnsettled),
// with what it took: its plain subscriptions get no forward
// (skipUnsettled), but the node announced its share group memberships as
// routing interest when it restored it, so a publisher may pick this node
// to serve a group it is the only member of here, and then holds nothing
// for it. As an away copy it gets the message, and the message is kept
// for its session: whoever has the session next (this node once settled,
// the copy having it; the claimer, reading this node's held subject)
// gets it once. Before, the copy took it and lost it when it was dropped
// (test/jepsen TestClusterFull seeds 41, 42, 45, 46: 24 group messages
// lost in four runs; TestReproUnsettledGroup).
func (n *Node) Away(id string) bool {
	return n.sess != nil && (n.sess.kept.has(id) || n.sess.gate.unsettled(id))
}

// keptLocal returns the disowned copies here that a QoS 1/2 message
// published here reached, as the broker saw them when it matched the
// message (msg.AwayMembers): through a plain subscription, or as the
// member of a share group the broker chose. Asking the set here instead,
// after the routing, missed a copy that ended in between: its end takes
// it out of the set, and the message it took was lost with it.
func (n *Node) keptLocal(msg *broker.Message) []keptCopy {
	if n.sess == nil || msg.QoS == 0 {
		return nil
	}
	return withAway(nil, msg.AwayMembers())
}

// withAway adds to ks the disowned copies the broker gave the message to
// (away), one entry per session with the share groups it got it for (a
// plain subscription's entry names none).
func withAway(ks []keptCopy, away []broker.AwayMember) []keptCopy {
	for _, a := range away {
		i := slices.IndexFunc(ks, func(k keptCopy) bool { return k.id == a.ClientID })
		if i < 0 {
			ks = append(ks, keptCopy{id: a.ClientID})
			i = len(ks) - 1
		}
		if a.Group != "" && !slices.Contains(ks[i].groups, a.Group) {
			ks[i].groups = append(ks[i].groups, a.Group)
		}
	}
	return ks
}

// keep appends, for each of ks, a copy of a message given to its
// disowned copy here to this node's held subject, marked for it: k and o
// name the message (origin; Origin, if any), fwd is its forwarded form.
// Each kept copy names the share groups its session got the message for
// and no other: its next owner's reader claims the message for them
// (claimFor) before it gives it to the session as a member, and gives it
// through the session's plain subscriptions as well. It returns the
// appends' futures (settleKept).
func (n *Node) keep(k originKey, o broker.Origin, fwd []byte, ks []keptCopy) ([]jetstream.PubAckFuture, error) {
	s := n.sess
	// Not readyJS: a restored copy (Away) takes messages before the
	// owners are read; the appends carry no epoch.
	if _, err := s.openJS(); err != nil {
		return nil, fmt.Errorf("kept for a disowned copy: %w", err)
	}
	taken := strconv.FormatInt(time.Now().UnixNano(), 10)
	fs := make([]jetstream.PubAckFuture, 0, len(ks))
	ids := make([]string, 0, len(ks))
	for _, kc := range ks {
		form, err := forwardWithGroups(fwd, kc.groups, false)
		if err != nil {
			return fs, err
		}
		m := nats.NewMsg(s.heldSubject(n.cfg.Node))
		m.Data = encodeHeld(k, form)
		m.Header.Set(jetstream.MsgIDHeader, keptMsgID(k, o, kc.id))
		m.Header.Set(heldForHeader, kc.id)
		m.Header.Set(heldTakenHeader, taken)
		f, err := n.appendHeld(n.cfg.Node, m, nil)
		if err != nil {
			return fs, fmt.Errorf("kept for a disowned copy of %q: %w", kc.id, err)
		}
		fs = append(fs, f)
		if s.kept.count(kc.id) == 1 {
			s.announceKept(kc.id)
		}
		n.fault.keptFor(kc.id)
		ids = append(ids, kc.id)
	}
	n.log.Debug("cluster: message for a disowned copy kept in the held subject", "clients", ids, "origin", k.node)
	return fs, nil
}

// keptMsgID is a kept copy's message id: the same message kept twice for
// the same session (a forward's batch sent again, a QoS 2 resend routed
// again under its Origin) is kept once. Not a hold's id (hold): a kept
// copy must not stand in for the hold of the same message for this node,
// which is for every session here.
func keptMsgID(k originKey, o broker.Origin, id string) string {
	if !o.IsZero() {
		return "k.o." + strconv.FormatUint(o.Hash(), 36) + "." + ownerKey(id)
	}
	return "k." + k.inc + "." + strconv.FormatUint(k.id, 36) + "." + ownerKey(id)
}

// settleKept waits for keep's appends, up to ForwardTimeout: the message
// is confirmed (taken) only once they are in the stream.
func (n *Node) settleKept(fs []jetstream.PubAckFuture) error {
	if len(fs) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.ForwardTimeout)
	defer cancel()
	for _, f := range fs {
		if err := n.settleHeld(ctx, n.cfg.Node, f); err != nil {
			return fmt.Errorf("kept for a disowned copy: %w", err)
		}
	}
	return nil
}

// The copy's end. A fenced copy's filters become hold keys (fenceHold)
// before it leaves the tree, and the others hold for this node what they
// match once they see them, a delta later; a forward that reaches this
// node in between, after the copy left the tree, matches nobody here and
// was confirmed: acknowledged and lost (TestReproCopyEnd). So this node
// holds such a forward for itself, as Forward does for a message
// published here (persist.holds): unmarked, in its own held subject, by
// the hold's own message id (holdMsgID), so that the publisher's hold of
// the same message once it sees the keys is the same one; the session's
// next owner reads it there as it reads the publisher's.

// holdHere holds for this node a QoS 1/2 forward (k, rm; fwd its
// forwarded form) that a fenced session's hold keys here match while the
// session is gone from the server (a copy that ended): through a plain
// filter, or as a share group the forward named that no member here took
// (rm.Missed). The held copies name those groups only, each apart
// (holdSplit). nil without such a key. A restored session's plain hold
// keys (one not settled yet, or dropped before it was) are left to the
// publishers: they had them from the node's first snapshot, before its
// routing interest. Its share groups are not: the node announced the session's membership as routing
// interest when it restored it, so a publisher may choose this node to
// serve such a group, and then does not hold the message for it; once
// the copy is dropped (Away), the group misses it here. Such a group is
// held here too, as for an ended copy.
func (n *Node) holdHere(k originKey, rm *broker.RemoteMessage, fwd []byte) ([]jetstream.PubAckFuture, error) {
	if n.sess == nil {
		return nil, nil
	}
	ms := n.sess.persist.holdMatches(rm.Topic)
	if len(ms) == 0 {
		return nil, nil
	}
	plain, groups := false, []string{}
	gone := map[string]bool{}
	var ids []string
	for _, m := range ms {
		ended, seen := gone[m.id]
		if !seen {
			_, _, here := n.srv.Client(m.id)
			ended, gone[m.id] = !here, !here
		}
		switch {
		case !m.fenced:
			if m.group == "" || !slices.Contains(rm.Missed, m.group) {
				continue
			}
			if !slices.Contains(groups, m.group) {
				groups = append(groups, m.group)
			}
		case !ended:
			continue
		case m.group == "":
			plain = true
		case slices.Contains(rm.Missed, m.group):
			if !slices.Contains(groups, m.group) {
				groups = append(groups, m.group)
			}
		default:
			continue
		}
		if !slices.Contains(ids, m.id) {
			ids = append(ids, m.id)
		}
	}
	if !plain && len(groups) == 0 {
		return nil, nil
	}
	s := n.sess
	// Not readyJS: a restored session's group is held here before the
	// owners are read (Away).
	if _, err := s.openJS(); err != nil {
		return nil, fmt.Errorf("held for an ended copy here: %w", err)
	}
	// A plain copy only when a plain key matched: the plain subscribers
	// of the sessions here had their copies by the forward.
	fs, err := holdSplit(k, rm.Origin, n.cfg.Node, groups, plain, func(gs []string, only bool, id string) (jetstream.PubAckFuture, error) {
		form, err := forwardWithGroups(fwd, gs, only)
		if err != nil {
			return nil, err
		}
		m := nats.NewMsg(s.heldSubject(n.cfg.Node))
		m.Data = encodeHeld(k, form)
		m.Header.Set(jetstream.MsgIDHeader, id)
		f, err := n.appendHeld(n.cfg.Node, m, nil)
		if err != nil {
			return nil, fmt.Errorf("held for an ended copy here: %w", err)
		}
		return f, nil
	})
	if err != nil {
		return fs, err
	}
	// One line per message: the window is a delta's way long.
	n.log.Info("cluster: a forward that reached an ended copy's hold keys held for this node", "clients", ids, "topic", rm.Topic, "origin", k.node, "groups", len(groups))
	return fs, nil
}

// forwardWithGroups returns fwd, a forwarded message (wire.go), naming
// groups as the share groups it is for instead of its own.
func forwardWithGroups(fwd []byte, groups []string, groupsOnly bool) ([]byte, error) {
	r := reader{b: fwd}
	if r.byte() != wireVersion {
		return nil, errWire
	}
	flags := r.byte()
	r.string()  // from
	r.uvarint() // expires
	head := len(fwd) - len(r.b)
	count := r.uvarint()
	if r.err != nil || count > uint64(len(r.b)) {
		return nil, errWire
	}
	for range count {
		r.string()
	}
	if r.err != nil {
		return nil, errWire
	}
	if count == 0 && len(groups) == 0 && (!groupsOnly || flags&flagGroupsOnly != 0) {
		return fwd, nil
	}
	out := make([]byte, 0, len(fwd)+len(groups)*16)
	out = binary.AppendUvarint(append(out, fwd[:head]...), uint64(len(groups)))
	if groupsOnly {
		out[1] |= flagGroupsOnly
	}
	for _, g := range groups {
		out = appendString(out, g)
	}
	return append(out, r.b...), nil
}

// heldFor returns the session a held message is kept for (keep), "" for
// a hold (every matching session of the node).
func heldFor(m jetstream.Msg) string {
	if h := m.Headers(); h != nil {
		return h.Get(heldForHeader)
	}
	return ""
}

// heldTime is when held message m (stored at stored) counts as held for
// the readers' comparisons with a session's last op: when its copy took
// it, for a kept one (heldTakenHeader).
func heldTime(m jetstream.Msg, stored time.Time) time.Time {
	h := m.Headers()
	if h == nil {
		return stored
	}
	if v := h.Get(heldTakenHeader); v != "" {
		if ns, err := strconv.ParseInt(v, 10, 64); err == nil {
			return time.Unix(0, ns)
		}
	}
	return stored
}

// onlyFor narrows ids to the session m is kept for, if any.
func onlyFor(m jetstream.Msg, ids func(string) bool) func(string) bool {
	f := heldFor(m)
	if f == "" {
		return ids
	}
	return func(id string) bool { return id == f && ids(id) }
}

// A live move between two other nodes. The copy's node is neither the
// old owner nor the new one of a later live move, and neither read its
// held subject for the session: the old owner had the session by a live
// move itself, or from the stream before the fence, and names no place
// of this node's subject (bench/jepsen/RESULTS.md "kept3";
// TestReproKeptCopyThirdNode: every message the copy kept, lost). So
// while its copy's kept messages are unread here (keptUnreadLocked) the
// node announces a kept key for the session with the loss they were kept
// since, and a live move onto any other node reads this node's held
// subject for the session from there (keptElsewhere), as a move onto
// this node reads its own (takeHeldBack). Not a message to the owner
// when the copy's node sees it fenced: the owner may have the session
// offline and move it on before it reads, and a live client would get
// the kept copies behind what it got since (the move's catch-up puts
// them first). Announced, not pushed: the copy's node does not know
// which move reads them, so the key stays until the mark goes here (a
// move back or a claim here reads them, or arrivedKeep passes), and
// each live move meanwhile reads the place again: what the session's
// state holds already is left out (its queue, its Seen ring, the origin
// watch), a QoS 1 copy delivered and acknowledged long before may come
// again.

// keptGroup is the pseudo share group of a kept key: keptKey.
const keptGroup = "\x00kept"

// keptKey is the interest key announcing that this node's held subject
// holds copies kept for session id since since (its loss) that nothing
// carried to it. Its filter is the client id; not routing interest.
func keptKey(id string, since time.Time) ikey {
	return ikey{id, keptGroup + "\x00" + strconv.FormatInt(since.UnixNano(), 10)}
}

// isKept reports whether k is a kept key; keptOf the session and the
// loss it names (ok false for a malformed one).
func (k ikey) isKept() bool { return strings.HasPrefix(k.group, keptGroup) }

func (k ikey) keptOf() (id string, since time.Time, ok bool) {
	ns, err := strconv.ParseInt(strings.TrimPrefix(k.group, keptGroup+"\x00"), 10, 64)
	if err != nil {
		return "", time.Time{}, false
	}
	return k.filter, time.Unix(0, ns), true
}

// announceKeptLocked puts id's kept key out, or takes it back, as its
// copy's kept messages are unread here or not (keptUnreadLocked); s.mu
// held. Only for a copy fenced without a live move out (fencedKeep) or
// one that ended so: a copy handed over live keeps too, from its
// disown to the move's finish, and the finish carries it; announced, a
// move elsewhere that saw the key before its withdrawal read the
// copies a second time (TestClusterLiveHandoverRounds: QoS 2 twice).
func (s *sessions) announceKeptLocked(id string) {
	if s.persist == nil {
		return
	}
	at, want := s.keptUnreadLocked(id)
	if t, ended := s.unread[id]; !s.fencedCopy[id] && (!ended || !t.Equal(at)) {
		want = false
	}
	k, out := s.keptOut[id]
	if out && (!want || k != keptKey(id, at)) {
		s.persist.local.remove(k)
		delete(s.keptOut, id)
		out = false
	}
	if want && !out {
		if s.keptOut == nil {
			s.keptOut = map[string]ikey{}
		}
		k = keptKey(id, at)
		s.keptOut[id] = k
		s.persist.local.add(k)
	}
}

// fencedKeep notes that id's copy here was fenced with no live move
// out pending (fence.go fenceID): nothing carries what it keeps.
func (s *sessions) fencedKeep(id string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.kept.has(id) {
		return
	}
	if s.fencedCopy == nil {
		s.fencedCopy = map[string]bool{}
	}
	s.fencedCopy[id] = true
	s.announceKeptLocked(id)
}

// announceKept is announceKeptLocked for a copy's first kept message.
func (s *sessions) announceKept(id string) {
	s.mu.Lock()
	s.announceKeptLocked(id)
	s.mu.Unlock()
}

// keptElsewhere returns handed with, for each other node that announces
// a kept key of id (keptNodes), that node's held subject from the loss
// it names, unless handed names a place of it already (everything before
// that place was read for the session) or it is prev, the old owner of
// this move (its finish carried what its copy kept, or keptBy reads it).
func (s *sessions) keptElsewhere(prev, id string, handed []heldPos) []heldPos {
	self := s.n.cfg.Node
	for node, at := range s.n.remote.kept.of(id) {
		if node == self || node == prev || slices.ContainsFunc(handed, func(p heldPos) bool { return p.node == node }) {
			continue
		}
		s.n.log.Info("cluster: a session moved here reads what a fenced copy on another node kept",
			"client_id", id, "peer", node, "since", at.UTC().Format(time.RFC3339Nano))
		handed = append(slices.Clone(handed), heldPos{node: node, since: at.Add(-heldBackMargin), floor: at})
	}
	return handed
}

// keptNodes is, per node, the sessions it announced kept keys of
// (keptKey) with the loss each names; its own lock, taken last.
type keptNodes struct {
	mu sync.Mutex
	m  map[string]map[string]time.Time // node -> client id -> since
}

func (kn *keptNodes) set(node string, k ikey, add bool) {
	id, at, ok := k.keptOf()
	if !ok {
		return
	}
	kn.mu.Lock()
	defer kn.mu.Unlock()
	if !add {
		if kn.m[node][id].Equal(at) {
			delete(kn.m[node], id)
		}
		return
	}
	if kn.m == nil {
		kn.m = map[string]map[string]time.Time{}
	}
	if kn.m[node] == nil {
		kn.m[node] = map[string]time.Time{}
	}
	kn.m[node][id] = at
}

func (kn *keptNodes) drop(node string) {
	kn.mu.Lock()
	delete(kn.m, node)
	kn.mu.Unlock()
}

// of returns the nodes announcing a kept key of id, with its loss.
func (kn *keptNodes) of(id string) map[string]time.Time {
	kn.mu.Lock()
	defer kn.mu.Unlock()
	var out map[string]time.Time
	for node, ids := range kn.m {
		if at, ok := ids[id]; ok {
			if out == nil {
				out = map[string]time.Time{}
			}
			out[node] = at
		}
	}
	return out
}

// A forward refused leaves no copy behind. An away copy's take is sound
// only with its kept copy, whose reader claims the share group before it
// delivers; a copy here whose session streams are not open yet (a
// restarted node's restored, unsettled sessions) cannot have one (keep:
// errNotReady), and the forward is then not confirmed. Given to the copy
// all the same, the message was in the copy's queue, and its QueuePut
// reached the stream once it opened: the publisher's resend, routed
// elsewhere, claimed the group for another member, and the session's
// next owner delivered the record's copy as well, with no claim asked
// (test/jepsen TestClusterFull seed 108: a QoS 2 message to two members
// of g0; TestReproUnkeptGroup).

// leaveUnkeptGroups takes from rm.Groups, while the session streams here
// are not open, the share groups that only away copies here are members
// of (the broker would give the message to one of them), and returns an
// error naming them: the forward is not to be confirmed, and the
// publisher's resend serves them, here once the streams opened or on a
// node with a live member. nil (rm unchanged) when the streams are open
// or no such group is among rm.Groups. Plain subscriptions need no such
// care: a restored copy's are left out (skipUnsettled), and a disowned
// copy exists only on a node whose streams are open.
func (n *Node) leaveUnkeptGroups(rm *broker.RemoteMessage) error {
	if n.sess == nil || len(rm.Groups) == 0 {
		return nil
	}
	if _, err := n.sess.openJS(); err == nil {
		return nil
	}
	awayOnly := n.srv.GroupsOnlyOf(rm.Topic, rm.Groups, n.Away)
	if len(awayOnly) == 0 {
		return nil
	}
	none := n.srv.GroupsOnlyOf(rm.Topic, awayOnly, nil) // no member here at all
	left := slices.DeleteFunc(awayOnly, func(g string) bool { return slices.Contains(none, g) })
	if len(left) == 0 {
		return nil
	}
	rm.Groups = slices.DeleteFunc(slices.Clone(rm.Groups), func(g string) bool { return slices.Contains(left, g) })
	n.log.Info("cluster: share groups of copies here not given a forward: their copy cannot be kept before the session streams open",
		"topic", rm.Topic, "qos", rm.QoS, "groups", groupKeys(left))
	return fmt.Errorf("share groups %s left out: %w", groupKeys(left).LogValue(), errNotReady)
}
