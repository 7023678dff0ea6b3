package cluster

import (
	"testing"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/store"
)

// An op is sent at the epoch of the claim it was appended under, also
// when this node claimed its id again before the op left (its partition
// stream had no quorum meanwhile): sent at the new claim's epoch, the op
// of the ownership before made readers skip the ops of the owner in
// between as stale (test/jepsen TestClusterFull seed 44: a node's queued
// ops of a session it had handed over; the messages queued by the next
// owner were lost). A stale rollup loses its purge, one followed only by
// this node's own claims keeps it; an op appended before any claim here
// (a restored session before start) takes the claim current when it is
// sent.
func TestOpsKeepTheirClaimsEpoch(t *testing.T) {
	n := &Node{cfg: Config{Partitions: 1}, inc: "i1", local: newLocalInterest()}
	s := n.Sessions(store.NewMemory()).(*sessions)
	s.Append(broker.Op{Kind: broker.OpSessionPut, ClientID: "r"}) // restored, before start
	s.setEpoch("x", 14, true)
	s.adopt("x")
	s.Append(broker.Op{Kind: broker.OpSessionPut, ClientID: "x"}) // a rollup under claim 14
	s.Append(broker.Op{Kind: broker.OpSubPut, ClientID: "x", Sub: broker.StoredSub{Filter: "t/#"}})
	// y: adopted at 5, then the client back on this node (claim 6,
	// replacing this node's own record): its rollup keeps its purge.
	s.setEpoch("y", 5, true)
	s.adopt("y")
	s.Append(broker.Op{Kind: broker.OpSessionPut, ClientID: "y"})
	s.setEpoch("y", 6, false)
	// x: handed over (claim 15 elsewhere), then claimed here again.
	s.setEpoch("x", 16, true)
	s.setEpoch("r", 3, false)
	s.adopt("x")
	s.Append(broker.Op{Kind: broker.OpSessionPut, ClientID: "x"})
	q := s.parts[0].ops
	if len(q) != 5 {
		t.Fatalf("%d ops queued, want 5", len(q))
	}
	epochs, stale := s.sendEpochs(q)
	want := []uint64{3, 14, 14, 5, 16}
	wantStale := []bool{false, true, true, false, false}
	for i := range q {
		if epochs[i] != want[i] || stale[i] != wantStale[i] {
			t.Errorf("op %d (%s): epoch %d, stale %v; want %d, %v", i, q[i].id, epochs[i], stale[i], want[i], wantStale[i])
		}
	}
	if !q[1].rollup || !q[3].rollup || !q[4].rollup {
		t.Fatal("the adoptions' ops are not rollups: the test does not check what it should")
	}
}
