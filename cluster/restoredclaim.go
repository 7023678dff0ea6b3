package cluster

import (
	"github.com/roost-mqtt/roost/broker"
)

// Restored copies' share group claims.
//
// A first routing's QoS 2 copy for a persistent share group member waits
// in the member's queue, journalled, until the group's claim is answered
// (ClaimServed). A node killed in between leaves the copy in the
// session's record with no claim made, and gapac's design had the next
// owner claim it (claimQueued, run where a node adopts a session: a
// claim's stream read, a live move, the janitor). But the next owner may
// be the same node after its restart: it restores the session from its
// own store, and claimQueued never runs for that. The copy's pending
// claim is not stored (broker.StoredDelivery.Claim), so the restored
// copy went out unclaimed, and the publisher's resend on another node
// found the group unclaimed and gave it to a second member (test/jepsen
// TestClusterFull short faults, seed 873: pub0#70 queued for g1m0 on n2,
// n2 killed 92 ms later; restarted, n2 restored g1m0, which got pub0#70
// at 42.262, and the resend on n3 gave g1 to g1m1 at 42.534;
// bench/jepsen/RESULTS.md, t28 and n873; TestReproGroupRestoredUnclaimed).
//
// So each restored QoS 2 group copy that claimQueued would claim
// (groupCopies) waits in its queue from the restore (a broker.QueuedClaim
// set in Load), and once the node settled (the owner records read: the
// session is still this node's) its group is claimed for the member, as
// an adoption claims it (settleQueuedClaim, within claimSettleBound). The
// answer lets the copy go, or drops it when the group was claimed for
// another member first (a resend's routing while the node was down, a
// held copy's reader). A claim found made for the same member is the
// copy's own (the first routing's claim that did land before the kill,
// same message id and data): sent. A copy sent before (a packet id) got
// its claim's answer before its PUBLISH; its claim is made again all the
// same (it cannot wait), for one whose claim was given up past its bound.
// QoS 1 copies are not claimed by first routings (a second copy is
// allowed, a loss is not) and stay as they are.

// restoredCopy is a restored session's queued share group copy whose
// claim is made once the node settled: the session id, the message, the
// group, and the gate the delivery waits on (nil: sent before).
type restoredCopy struct {
	id   string
	msg  *broker.Message
	gk   string
	gate *broker.QueuedClaim
}

// gateRestored sets a claim gate on each queued copy of rec, a session
// read from this node's store, whose group is to be claimed at the
// settle, and returns those copies (Load, before the broker restores
// rec).
func gateRestored(rec *broker.StoredSession) []restoredCopy {
	var out []restoredCopy
	for _, gc := range groupCopies(rec) {
		d := &rec.Queue[gc.i]
		c := restoredCopy{id: rec.ClientID, msg: d.Msg, gk: gc.gk}
		if d.PacketID == 0 {
			c.gate = broker.NewQueuedClaim()
			d.Claim = c.gate
		}
		out = append(out, c)
	}
	return out
}

// claimRestored claims the groups of the restored copies (gateRestored)
// of the sessions in here, still this node's restored ones at the
// settle, and answers each copy's gate. The others ended: their next
// owner read them from the stream and claims their copies there
// (claimQueued). Called once, from onSettled.
func (s *sessions) claimRestored(here map[string]bool) {
	copies := s.restoredCopies
	s.restoredCopies = nil
	n := s.n
	count := map[string]int{}
	for _, c := range copies {
		if !here[c.id] || s.gate.endedHere(c.id) {
			continue
		}
		count[c.id]++
		m := s.queuedClaimMsg(c.msg.Origin(), c.gk, c.id)
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.answerRestored(c, n.settleQueuedClaim(c.id, m))
		}()
	}
	for id, k := range count {
		// Where a later trace looks for who claimed a group first.
		n.log.Debug("cluster: restored share group copies held for their claims at the settle", "client_id", id, "claims", k)
	}
}

// answerRestored lets c go or drops it by a, its claim's answer, and logs
// the outcome.
func (n *Node) answerRestored(c restoredCopy, a queuedAnswer) {
	o := c.msg.Origin()
	log := n.log.With("client_id", c.id, "publisher", o.ClientID, "packet_id", o.PacketID, "topic", c.msg.Topic, "sent", c.gate == nil)
	switch {
	case a.by != "" && c.gate == nil:
		log.Info("cluster: a restored share group copy sent before was claimed for another member: the group may have it twice", "claimed_for", a.by)
	case a.by != "":
		log.Info("cluster: a restored share group copy dropped at the settle: the group was claimed for another member", "claimed_for", a.by)
	case a.err != nil:
		log.Info("cluster: a restored share group copy not claimed at the settle: a resend elsewhere may give the group a second copy; delivered", "err", a.err)
	default:
		log.Debug("cluster: a restored share group copy claimed at the settle")
	}
	if c.gate != nil {
		c.gate.Answer(a.by == "")
	}
}
