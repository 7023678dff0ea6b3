package cluster

import (
	"strings"
	"sync"

	"github.com/roost-mqtt/roost/broker"
)

// Places carried with queued messages.
//
// A session catching up (catchup.go) puts what was held for it ahead of
// what was forwarded meanwhile, behind only its publisher's older
// messages: the broker orders by each message's place (originKey.place:
// the routing node, its incarnation and the message's id there, which
// grow in publication order within one process). Every forwarded and
// held message delivered here carries its place (deliverForward,
// deliverHeldTo), not only while a session catches up, and the place is
// kept with the queued copy wherever the session's queue goes: in its
// QueuePut op, the handover's queue and the live move's export
// (appendMessage, wirePlaceVersion). An adoption restores the places,
// and the broker's catch-up orders what is held for the session against
// the adopted queue's messages by them (broker.CatchUp's anchors). Before,
// the adopted queue had no places, and what was held for the session went
// behind all of it, newer messages of the same publisher included
// (bench/jepsen/RESULTS.md, Session 26, long faults seed 605;
// TestReproPausedOwnerMovesLive).
//
// Messages published on the session's own node carry no place (their
// copies here have none to give: "place27" in RESULTS.md, what is left).
//
// A held message passed on to a moved member's new owner (held.go
// passMissed) is a forward of the passing node, but its place is the held
// message's: its origin travels with it (encodeReforward, flagHeld), and
// the new owner takes it as the message's place and key (heldPassedOn).
// Placed as the passing node's own message, and not Late, it went behind
// what was routed to the session since its catch-up began, while the newer
// kept copies of the same publisher that the session's own read brought
// went ahead of it; and a session that read the same kept copy first got
// a clean publisher's QoS 2 message twice, its copy name (originKey.copy)
// being the passing node's (test/jepsen TestClusterFull seed 883, session
// 28: g1m0 got pub2#134 after #136; TestReproKeptPassOnOrder).

// placeSources names each peer incarnation's place source once, so that a
// forwarded message's place costs no string of its own.
type placeSources struct {
	mu  sync.RWMutex
	src map[[2]string]string // node, incarnation: originKey.place's Source
}

// of returns k's place (originKey.place), its Source shared by every
// message of k's node and incarnation.
func (p *placeSources) of(k originKey) broker.Place {
	key := [2]string{k.node, k.inc}
	p.mu.RLock()
	s, ok := p.src[key]
	p.mu.RUnlock()
	if !ok {
		s = k.place().Source
		p.mu.Lock()
		if p.src == nil {
			p.src = map[[2]string]string{}
		}
		p.src[key] = s
		p.mu.Unlock()
	}
	return broker.Place{Source: s, Seq: k.id}
}

// here returns the place Source of the messages routed on this node
// (originKey.place of its own keys), for the queued copies it writes
// (queuedPlace).
func (n *Node) here() string {
	return n.places.of(originKey{node: n.cfg.Node, inc: n.inc}).Source
}

// heldPassedOn returns the origin of rm, a forwarded message, if it is a
// held message passed on (decodeForward: Late with a place), from its
// place (originKey.place).
func heldPassedOn(rm *broker.RemoteMessage) (originKey, bool) {
	if !rm.Late || rm.Place.Source == "" {
		return originKey{}, false
	}
	node, inc, ok := strings.Cut(rm.Place.Source, "\x00")
	if !ok || node == "" || inc == "" || rm.Place.Seq == 0 {
		return originKey{}, false
	}
	return originKey{node: node, inc: inc, id: rm.Place.Seq}, true
}
