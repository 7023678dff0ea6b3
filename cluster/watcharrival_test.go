package cluster

import (
	"testing"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/packet"
)

// A session moved live to a node that has hold keys out (a restored
// session's, kept while it is claimed elsewhere) gets a message once
// though the others both forwarded it here (the session's persistent
// key) and held it for this node (the hold key of the same filter),
// whichever copy comes first; with no hold keys out it is not watched
// (nothing is held for this node). Before, the held copy was applied to
// it as to any session here when it was held: 24 QoS 2 duplicates in
// TestClusterFull seed 41.
func TestWatchArrivalWhileHoldKeysOut(t *testing.T) {
	n := &Node{}
	s := &sessions{n: n, persist: newPersistentFilters(newLocalInterest())}
	k := originKey{"n1", "i1", 7}
	all := func(string) bool { return true }

	s.watchArrival("moved")
	if !n.dedupPick(k, all)("moved") || !n.dedupPick(k, all)("moved") {
		t.Fatal("a session moved here with no hold keys out was watched (refused a copy)")
	}

	s.persist.restore(&broker.StoredSession{ClientID: "restored",
		Subs: []broker.StoredSub{{Filter: "t/#", Opts: packet.SubOptions{QoS: 2}}}})
	s.persist.leaveKeepHeld("restored") // claimed elsewhere: its hold keys stay for cover
	s.watchArrival("moved")
	if !n.dedupPick(k, all)("moved") {
		t.Fatal("the first copy (forwarded) refused")
	}
	if n.dedupPick(k, all)("moved") {
		t.Error("the held copy of the same message delivered too")
	}
	if !n.dedupPick(originKey{"n1", "i1", 8}, all)("moved") {
		t.Error("another message refused")
	}
}
