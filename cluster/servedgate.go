package cluster

import (
	"context"
	"time"

	"github.com/roost-mqtt/roost/broker"
)

var _ broker.ServedGate = (*Node)(nil)

// ClaimServed implements broker.ServedGate: a first routing's share group
// claim (as claimServed makes, naming the member: servedClaim), made
// before the member's QoS 2 PUBLISH instead of beside it. claimServed
// claimed once the member's copy was durable, which the PUBLISH waited
// for too, and nothing made the PUBLISH wait for the claim: a node killed
// in between left the member with the message and no claim, and the
// reader of the copy another node held for it gave the group to a second
// member (test/jepsen TestClusterFull short faults, seed 279: pub2#109
// given to g0m0 on n1 at 24.914, n1 killed 122 ms later, no claim in any
// store; n3's reader for g0m1 claimed g0 at 25.357; gaps A and C of
// bench/jepsen/RESULTS.md "shorts", "gd320"; TestReproGroupServedLate).
// Now the member's copy waits in its queue until the claim is in (or
// dropped when another member's claim was first): killed before, the
// node leaves the copy in the session's record, whose next owner claims
// it (claimQueued), never a PUBLISH out and the group unclaimed.
//
// The copy becomes durable first, as before: a claim standing without
// it lost the message (sg112). A copy not durable within forward_timeout
// is waited for again (its op is retried until its stream takes it),
// where claimServed gave up and the copy went out later unclaimed, to a
// second copy once the publisher's resend elsewhere claimed the group
// (gap A: seed 268's first half). Everything is bounded by
// claimSettleBound: past it the copy goes out unclaimed, logged, as
// before (at worst a second copy of the group, never none).
func (n *Node) ClaimServed(msg *broker.Message, gk, member string, t broker.Ticket, done func(deliver bool)) {
	o := msg.Origin()
	if n.sess == nil || o.IsZero() {
		done(true)
		return
	}
	if o.ClientID == "" { // a copy's name: a clean publisher's forward (copyClaimMsg)
		// Only a group the others would hold for this node is read
		// elsewhere (heldForHere, as claimServed).
		if g, _ := n.heldForHere([]string{gk}, nil); len(g) == 0 {
			done(true)
			return
		}
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		done(n.claimFirst(o, gk, member, t))
	}()
}

// claimFirst makes ClaimServed's claim and reports whether member's copy
// is to go out: false when the group was claimed for another member
// first.
func (n *Node) claimFirst(o broker.Origin, gk, member string, t broker.Ticket) bool {
	ctx, cancel := context.WithTimeout(n.ctx, claimSettleBound(n.cfg.ForwardTimeout))
	defer cancel()
	s := n.sess
	log := n.log.With("client_id", o.ClientID, "packet_id", o.PacketID, "member", member)
	js, err := s.awaitOpenJS(ctx)
	if err != nil {
		log.Info("cluster: share group of a first routing not claimed before its delivery: the session streams are not open here; delivered", "err", err)
		return true
	}
	if err := n.awaitDurable(ctx, t); err != nil {
		log.Info("cluster: share group of a first routing not claimed before its delivery: its copy here is not durable; delivered", "err", err)
		return true
	}
	if leave, first := n.fault.leavesServed(o.ClientID, []string{member}); leave {
		if first {
			n.log.Info("cluster: test fault: a first routing's share group claims left out", "client_id", o.ClientID)
		}
		return true
	}
	if d := n.fault.delaysServed(o.ClientID, []string{member}); d > 0 {
		n.log.Info("cluster: test fault: a first routing's share group claims delayed", "client_id", o.ClientID, "members", []string{member}, "for", d)
		select {
		case <-time.After(d):
		case <-n.ctx.Done():
			return true
		}
	}
	if s.lostHere(member) {
		// Disowned while its copy became durable: the session goes on
		// elsewhere with the copy (a live move's export and finish,
		// the stream's record, or the disown's kept copy: keeplate.go),
		// whose next owner or reader claims the group for it itself
		// (claimQueued, claimFor). A claim here stood for a copy nobody
		// had when none of those carried it (its op landed after the
		// claimer's read), and turned every later reader and the
		// publisher's resend away: the group lost the message
		// (test/jepsen TestClusterFull long faults, seed 968 run 2,
		// session 29: "served:g1m1" claimed on n2 42 ms after its
		// disown; TestReproLateOpsKept's m3; bench/jepsen/RESULTS.md
		// "gl29", "gl30"). The copy is let be, not dropped: a live
		// move's finish carries the queue after the disown, and a
		// drop's QueueDel took the copy from the new owner too (seed
		// 968 long faults on this change's first form: 7 lost, "gl30").
		// Disowned, its client here, if any, is being taken over.
		log.Info("cluster: a first routing's share group not claimed here: the member's copy here was disowned meanwhile; left to its session's next owner", "group", gk)
		return true
	}
	m := s.claimMsg(originKey{}, o, gk, servedClaim(member))
	if o.ClientID == "" {
		m = s.copyClaimMsg(o.Nonce, gk, servedClaim(member))
	}
	f := n.fault.silencesServed(o.ClientID, m)
	if f != nil {
		n.log.Info("cluster: test fault: a first routing's share group claim left unanswered", "client_id", o.ClientID)
	} else if f, err = js.PublishMsgAsync(m); err != nil {
		log.Info("cluster: share group of a first routing not claimed before its delivery: the append was refused; delivered", "err", err)
		return true
	}
	ack, _, err := settleClaim(ctx, js, f)
	if err != nil {
		log.Info("cluster: share group of a first routing not claimed before its delivery: a resend elsewhere may give the group a second copy; delivered", "err", err)
		return true
	}
	if ack.Duplicate {
		by, err := claimData(ctx, js, ack)
		switch {
		case err != nil:
			log.Info("cluster: a first routing's share group claim was found made, by whom not read: the group may have it twice; delivered", "err", err)
			return true
		case by != servedClaim(member) && by != member:
			// A held copy's reader, a resend's routing or another
			// member's adoption gave the group its copy first.
			log.Info("cluster: a first routing's share group was claimed for another member first; the member's copy here dropped",
				"claimed_for", by, "group", gk)
			return false
		}
	}
	log.Debug("cluster: share groups of a first routing claimed", "groups", 1, "before_delivery", true)
	return true
}

// awaitDurable waits until store ticket t is replicated, waiting again
// after each of sessions.Wait's bounds (forward_timeout: the op is sent
// again until its stream takes it) until ctx ends.
func (n *Node) awaitDurable(ctx context.Context, t broker.Ticket) error {
	for {
		err := n.sess.Wait(t)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(heldRetryWait):
		}
	}
}
