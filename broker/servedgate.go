package broker

import (
	"sync"

	"github.com/roost-mqtt/roost/packet"
)

// Share group claims before the member's PUBLISH.
//
// A cluster gives each share group a QoS 2 message once cluster-wide,
// and claims the group in a replicated record when it gives the group's
// copy to a member (package cluster): a QoS 2 resend routed again on
// another node, and the reader of a copy held for a dead node, find the
// claim and leave the group out. The claim is made once the member's
// copy is durable (a claim standing without any copy lost the message).
// It was made beside the member's PUBLISH, not before it: a node killed
// after the PUBLISH went out and before the claim reached its stream
// left the member with the message and the group unclaimed, and another
// node's copy reached a second member (test/jepsen TestClusterFull short
// faults, seed 279: 122 ms between the delivery and the kill).
//
// So a cluster that implements ServedGate gets, for each such delivery
// to a persistent member whose copy is QoS 2, the claim first: the
// delivery is queued (journalled, as any queued message, and counted in
// the publisher's acknowledgement) with its claim pending, the cluster
// claims the group once that copy is durable, and the answer lets the
// delivery go out, or drops it when the group's copy went to another
// member first. While a session's queue holds such a delivery, everything
// after it for the session queues behind it, QoS 0 included, as behind a
// pending receive check (authq.go): a member's later messages never
// overtake one waiting for its claim. Should the node die before the
// answer, the queued copy is in the session's record and goes with the
// session, whose next owner claims it (package cluster, claimQueued; the
// node itself after its restart: claimRestored, with a QueuedClaim). A
// clean member (its copy dies with its node) and a QoS 1 copy (which may
// come twice) are not held: their claims still follow the delivery.

// ServedGate is implemented by a Cluster that claims share groups for
// their members before the QoS 2 PUBLISH goes out (see above).
type ServedGate interface {
	// ClaimServed claims share group gk ("group\x00filter") of msg (a
	// QoS 2 message under an Origin or a copy's name, Message.Origin)
	// for member, once store ticket t, member's queued copy, is
	// durable, and then calls done once, from any goroutine, with false
	// when the group's copy went to another member first, true
	// otherwise (claimed for member, or given up: delivered, at worst a
	// second copy, never none). It must not block: it is called while
	// the message is routed.
	ClaimServed(msg *Message, gk, member string, t Ticket, done func(deliver bool))
}

// servedGate is a share group delivery held for its claim: its member's
// session, the group, and (set when delivered) the queued copy and its
// store ticket; had: the member got the message before (its Origin), t
// that copy's ticket.
type servedGate struct {
	ss  *session
	gk  string
	ob  *outbound
	t   Ticket
	had bool
}

// gateServed moves from sc.served to sc.gates the groups whose delivery
// is to wait for its claim (ServedGate): a QoS 2 copy for a persistent
// member, each of its groups (a message matching two share subscriptions
// of one session is one copy, which waits for both claims: claimGates).
// Gating the first group only left the second's claim after the PUBLISH,
// gap C for that group (bench/jepsen/RESULTS.md, gapac's "What is left"
// 3; TestServedGateTwoGroups).
//
// A resend (once.chosen set: resent) claimed its groups before it was
// routed (claimAhead, ClaimResend), for the members it found then:
// nothing to hold for those. A group it decided nothing for had no member
// here then, and one that joined while the claims were made (a session
// moving in live, adopted in those milliseconds) took the message with no
// claim, passing over one made before for another member: held for its
// claim as a first routing's is (test/jepsen TestClusterFull short
// faults, seed 1002: pub0#237 given to g0m0 on n2, which claimed g0 and
// was killed; pub0's resend on n1 claimed g1 for 40 ms, g0m1 was adopted
// there meanwhile and got g0 unclaimed; TestServedGateResendLateMember).
func (s *Server) gateServed(msg *Message, sc *routeScratch, resent bool, chosen map[string]string) {
	if msg.QoS != 2 || len(sc.served) == 0 {
		return
	}
	if _, ok := s.opts.Cluster.(ServedGate); !ok {
		return
	}
	w := 0
	for i, gk := range sc.served {
		ss := sc.servedSess[i]
		decided := false // claimed ahead for its member (pickOnce)
		if resent {
			_, decided = chosen[gk]
		}
		if !decided && sc.targets[sc.index[ss]].qos == 2 && ss.gateable() {
			sc.gates = append(sc.gates, servedGate{ss: ss, gk: gk})
			continue
		}
		sc.served[w], sc.servedTo[w], sc.servedSess[w] = gk, sc.servedTo[i], ss
		w++
	}
	clear(sc.served[w:])
	clear(sc.servedTo[w:])
	clear(sc.servedSess[w:])
	sc.served, sc.servedTo, sc.servedSess = sc.served[:w], sc.servedTo[:w], sc.servedSess[:w]
}

// gateable reports whether ss's copies outlive this node (the store
// keeps them), so that one held for its claim is not lost with it.
func (ss *session) gateable() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return !ss.ended && ss.persisted()
}

// gateOf returns the index in sc.gates of ss's first gate; -1 for none.
func (sc *routeScratch) gateOf(ss *session) int {
	for i := range sc.gates {
		if sc.gates[i].ss == ss {
			return i
		}
	}
	return -1
}

// setGates notes, on each of ss's gates, its copy (ob, nil for none) and
// its store ticket t, or that it had the message before (had).
func (sc *routeScratch) setGates(ss *session, ob *outbound, t Ticket, had bool) {
	for i := range sc.gates {
		if sc.gates[i].ss == ss {
			sc.gates[i].ob, sc.gates[i].t, sc.gates[i].had = ob, t, had
		}
	}
}

// claimGates asks the cluster to claim each of sc.gates whose member
// holds a copy (queued now, or got before), and to let the queued copy
// go once answered: once every group of its session's gates is, sent if
// any was claimed for the member (it is that group's copy), dropped if
// none was. A member that took no copy (refused by the Authorizer, its
// queue full, its session ended) is not claimed for: a claim naming it
// would keep the group's message from every other copy.
func (s *Server) claimGates(msg *Message, sc *routeScratch) {
	g := s.opts.Cluster.(ServedGate)
	var answers []*gateAnswer // one per copy, in the order of its first gate
	for i, sg := range sc.gates {
		ss, ob := sg.ss, sg.ob
		switch {
		case ob != nil:
			a := answerOf(answers, ob)
			if a == nil {
				a = &gateAnswer{ss: ss, ob: ob}
				for _, o := range sc.gates[i:] {
					if o.ob == ob {
						a.left++
					}
				}
				answers = append(answers, a)
			}
			g.ClaimServed(msg, sg.gk, ss.id, sg.t, a.done)
		case sg.had:
			g.ClaimServed(msg, sg.gk, ss.id, sg.t, func(bool) {})
		}
	}
}

// gateAnswer gathers the answers of the claims a queued copy waits for
// (claimGates).
type gateAnswer struct {
	ss      *session
	ob      *outbound
	mu      sync.Mutex
	left    int
	deliver bool
}

// done notes one claim's answer; the last lets the copy go or drops it.
func (a *gateAnswer) done(deliver bool) {
	a.mu.Lock()
	a.left--
	a.deliver = a.deliver || deliver
	last, d := a.left == 0, a.deliver
	a.mu.Unlock()
	if last {
		a.ss.claimAnswered(a.ob, d)
	}
}

func answerOf(answers []*gateAnswer, ob *outbound) *gateAnswer {
	for _, a := range answers {
		if a.ob == ob {
			return a
		}
	}
	return nil
}

// deliverGated queues msg for ss with its group's claim pending
// (ServedGate), and its receive check pending too when unchecked. It
// returns the store ticket of the queued copy and the copy; nil when ss
// ended or the queue refused it.
func (ss *session) deliverGated(msg *Message, qos packet.QoS, retain bool, subIDs []uint32, unchecked bool) (Ticket, *outbound) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.ended {
		return 0, nil
	}
	ob := &outbound{msg: msg, qos: qos, retain: retain, subIDs: subIDs, gated: true, claimWait: true,
		unchecked: unchecked, pending: unchecked}
	if ss.catching() != nil {
		// A persistent session's queued QoS 2 copy always has a
		// ticket: 0 says the queue refused it, and a claim naming a
		// member without a copy would keep the group's message from
		// every other.
		if t := ss.catchUpDeliver(ob); t != 0 {
			return t, ob
		}
		return 0, nil
	}
	ss.assignSeq(ob)
	if !ss.enqueue(ob) {
		return 0, nil
	}
	return ss.recordDelivery(ob), ob
}

// claimAnswered notes the answer of ob's claim: sent in its turn
// (deliver), or dropped as it leaves the queue (fill).
func (ss *session) claimAnswered(ob *outbound, deliver bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if !ob.claimWait {
		return
	}
	ob.claimWait, ob.claimDrop = false, !deliver
	if !ss.ended {
		ss.fill()
	}
}

// QueuedClaim holds a queued delivery of a session a cluster adopts
// (StoredDelivery.Claim, Adopt) until the cluster has its share group's
// claim answered, as a first routing's copy waits for ClaimServed: the
// delivery waits in the queue, everything after it for the session
// behind it, until Answer. The cluster sets it on a copy whose claim it
// could not settle before the adoption (package cluster, claimQueued: a
// partition stream without a leader); sent unclaimed, a publisher's
// resend elsewhere claimed the group for another member, and the group
// got the message twice (test/jepsen TestClusterFull short faults, seeds
// 440 and 447). It sets one too on each such copy of a session it
// restores from its own store, claimed once the node knows the session is
// still its own (package cluster, claimRestored; seed 873).
type QueuedClaim struct {
	mu       sync.Mutex
	ss       *session
	ob       *outbound
	answered bool
	deliver  bool
}

// NewQueuedClaim returns a claim not answered yet.
func NewQueuedClaim() *QueuedClaim { return &QueuedClaim{} }

// Answer lets the delivery go out in its turn (deliver), or drops it (the
// group's copy went to another member first). Only the first call counts;
// one before the adoption is applied by it, one after the session ended
// does nothing.
func (q *QueuedClaim) Answer(deliver bool) {
	q.mu.Lock()
	if q.answered {
		q.mu.Unlock()
		return
	}
	q.answered, q.deliver = true, deliver
	ss, ob := q.ss, q.ob
	q.mu.Unlock()
	if ss != nil {
		ss.claimAnswered(ob, deliver)
	}
}

// bind marks ob, the delivery q was set on, as held for q's answer (or
// dropped, answered so already); q may be nil. ss.mu is held.
func (q *QueuedClaim) bind(ss *session, ob *outbound) {
	if q == nil {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	ob.gated = true
	if q.answered {
		ob.claimDrop = !q.deliver
		return
	}
	ob.claimWait = true
	q.ss, q.ob = ss, ob
}
