package cluster

import (
	"time"

	"github.com/roost-mqtt/roost/broker"
)

// A session in the stream only while claims read it.
//
// A claim that takes a session from the stream (its previous owner did not
// answer, or said to read the stream) reads it, then what was held for it
// (adoptHeld), before the session is in the server: seconds under load,
// longer than a client's CONNACK bound (test/jepsen's 3 s). The client
// connects again, maybe elsewhere, and that claim supersedes this one,
// which then adopts nothing; and so on while the load lasts. All that
// time no node announced the session's interest, and once the cover of
// its last owner had run out (a dead node's orphan interest, a fenced or
// restored copy's hold keys) nothing was held for it either: what was
// published then was acknowledged to its publishers and reached nobody
// (TestClusterFull: 165-439 lost for one session in a run;
// TestReproClaimChainHeld).
//
// So the claim puts the session's filters out as hold keys of this node as
// soon as it has read the session (claimHold), as a fenced copy's end does
// (persistent.go fenceKeepHeld): the others hold what they match for this
// node, a publish here is held too, and whoever adopts the session reads
// every node's held subject since the session's last op, this one's
// included. The keys go when the claim adopted the session (its own
// interest is out then), or cover after the claim ended without it: a
// newer claim elsewhere has read the session by then and holds for itself.
//
// Not when no claim can read the session for longer than cover: a claim
// that could not read it put out no keys, and the keys that were out
// (a fence's, an earlier claim's) went at their end while it read. n3,
// fenced for n2's claim (which never read: that node paused), held lc-sub
// by its fence's keys for 17 s; its own claims back could not read the
// stream for 25 s (four CONNECTs closed "session stream: context deadline
// exceeded"), and for the 15 s between its keys' end and the read no node
// held or routed for lc-sub: n1 acknowledged about 37 QoS 1/2 messages
// and routed them to nothing (TestReproLateOpHeldClaimBack at load ~100,
// bench/jepsen/RESULTS.md load31). So a claim about to read the stream
// counts as a claim of the keys here (claimReading), and their end is put
// off to cover after its read (claimReadEnd), failed or not: each retry of
// the client's carries them on to the read that succeeds
// (TestClaimReadKeepsHoldKeys). A node with no keys of the id (its
// filters unknown until the read) has nothing to carry: a claim there
// that cannot read within the others' cover leaves the session unheld
// until a read succeeds (the janitors adopt only silent nodes' sessions).

// claimHold puts out id's filters (subs, as read from the stream) as hold
// keys for a claim here (above). Every other persistent session here is
// watched first, as for a fence's keys (fenceHold): the held copies this
// node's own follower applies to them are also forwarded to them, and
// each is to get one of the two (originWatch). Not id: a copy of it here
// is a disowned one, which the adoption replaces by the session read from
// the stream; watched, what that copy took (kept for the session, keep.go)
// counted as the session's, and its kept copies were dropped at the
// adoption (TestReproFenceWindowLifted: 5 of 116 lost).
func (s *sessions) claimHold(id string, subs []broker.StoredSub) {
	until := time.Now().Add(s.n.heldWatch() + s.persist.cover)
	ids := s.persistentHere()
	s.n.gate.Lock()
	for _, c := range ids {
		if c != id {
			s.n.watch.watch(c, until)
		}
	}
	s.n.gate.Unlock()
	if s.persist.claimKeepHeld(id, subs) {
		s.n.log.Debug("cluster: a session read from the stream by a claim held for this node until it is adopted", "client_id", id)
	}
}

// claimReading counts a claim of id about to read the session from the
// stream as a claim of this node's hold keys of id, if any are out (a
// fence's, an earlier claim's): they stay while it reads (above). It
// reports whether it counted; one that did ends by claimReadEnd.
func (s *sessions) claimReading(id string) bool { return s.persist.claimReading(id) }

// claimReadEnd ends a read counted by claimReading, with its error: the
// hold keys stay cover from now, for the client's next try when the read
// failed, or until the claim that read puts out its own (claimHold).
func (s *sessions) claimReadEnd(id string, err error) {
	if s.persist.claimHeldUntil(id) && err != nil {
		s.n.log.Info("cluster: a claim could not read the session from the stream; this node's hold keys of it stay a while",
			"client_id", id, "for", s.persist.cover, "err", err)
	}
}

// watchClaimed watches id, just claimed here, while this node has hold
// keys out (restored sessions', a fence's, a claim's): the others both
// forward to this node what id matches, by its own interest, and hold it
// for this node by the keys of the same filters, and this node's follower
// applies the held copy to every persistent session that was here when it
// was held (followOwnHeld). fenceHold and claimHold watch the sessions
// here when their keys go out; a session that came later by a claim (a
// new session above all) was not, so it got both copies: QoS 2 twice
// (TestReproClaimChainHeld's fresh session; TestClusterFull: a session
// new on a node whose claims held keys got 10 messages twice). Watched,
// it gets one of the two (originWatch). A session taken from the stream
// by the claim is watched from its adoption already (arrive); this only
// extends that.
func (s *sessions) watchClaimed(id string) {
	if s == nil || !s.persist.holdingAny() {
		return
	}
	until := time.Now().Add(s.n.heldWatch() + s.persist.cover)
	s.n.gate.Lock()
	s.n.watch.watch(id, until)
	s.n.gate.Unlock()
}

// claimHoldEnd ends a claim's hold keys of id (claimHold): adopted, the
// session is here with its interest (its subscriptions were journalled
// when it went in the server, and announced before the hold keys go);
// otherwise they stay for cover from now.
func (s *sessions) claimHoldEnd(id string, adopted bool) {
	if adopted {
		s.persist.claimAdopted(id)
		return
	}
	if s.persist.claimHeldUntil(id) {
		s.n.log.Info("cluster: a claim ended without the session; its filters stay held for this node a while",
			"client_id", id, "for", s.persist.cover)
	}
}
