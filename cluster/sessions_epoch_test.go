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

// TestLostIDsOpsAreStale: a session adopted here (a rollup queued while
// its partition stream has no quorum) and then claimed by another node
// before the rollup left: the rollup must lose its purge, which would
// remove the newer owner's ops from the stream.
func TestLostIDsOpsAreStale(t *testing.T) {
	n := &Node{cfg: Config{Partitions: 1}, inc: "i1", local: newLocalInterest()}
	s := n.Sessions(store.NewMemory()).(*sessions)
	s.setEpoch("z", 6, true)
	s.adopt("z")
	s.Append(broker.Op{Kind: broker.OpSessionPut, ClientID: "z"}) // a rollup under claim 6
	q := s.parts[0].ops
	if len(q) != 1 || !q[0].rollup {
		t.Fatal("the adoption's op is not a queued rollup: the test does not check what it should")
	}
	if _, stale := s.sendEpochs(q); stale[0] {
		t.Fatal("the rollup of this node's current claim is stale")
	}
	s.disown("z") // claimed by another node (epoch 8, say)
	if epochs, stale := s.sendEpochs(q); !stale[0] || epochs[0] != 6 {
		t.Errorf("after the id was lost: epoch %d, stale %v; want 6, stale (no purge)", epochs[0], stale[0])
	}
	s.setEpoch("z", 9, true) // claimed here again
	s.adopt("z")
	s.Append(broker.Op{Kind: broker.OpSessionPut, ClientID: "z"})
	q = s.parts[0].ops
	if _, stale := s.sendEpochs(q); !stale[0] || stale[1] {
		t.Errorf("claimed here again: stale %v, want [true false] (the old rollup still loses its purge, the new one keeps it)", stale)
	}
}

// TestKeptAdoptionTakesItsRollupMark: an adoption whose ops stay here (its
// id lost: claimed elsewhere) takes the rollup mark all the same. Left, the
// mark went to the id's next op sent once the id was claimed here again,
// a rollup that purged the record and left that op alone in it.
func TestKeptAdoptionTakesItsRollupMark(t *testing.T) {
	n := &Node{cfg: Config{Partitions: 1}, inc: "i1", local: newLocalInterest()}
	s := n.Sessions(store.NewMemory()).(*sessions)
	s.setEpoch("z", 5, true)
	s.disown("z") // claimed by another node: this node's ops stay here
	s.adopt("z")
	s.Append(broker.Op{Kind: broker.OpSessionPut, ClientID: "z", Session: broker.StoredSession{ClientID: "z", Expiry: 60}})
	if len(s.parts[0].ops) != 0 {
		t.Fatal("a lost id's adoption was queued: the test does not check what it should")
	}
	s.setEpoch("z", 7, true) // claimed here again; its client resumes the copy
	s.Append(broker.Op{Kind: broker.OpSessionPut, ClientID: "z", Session: broker.StoredSession{ClientID: "z", Expiry: 60}})
	for i, op := range s.parts[0].ops {
		if op.rollup {
			t.Errorf("op %d (%v) sent as a rollup: the kept adoption's mark went to it", i, op.kind)
		}
	}
	if len(s.parts[0].ops) == 0 {
		t.Error("the resumed copy's op was not queued")
	}
}

// TestReplacedCopyEndLeavesTheRollupMark: a claim back here replaces the
// disowned copy (its id no longer lost, the copy still kept): Adopt ends
// the copy first, and that end stays here. It must leave the adoption its
// rollup mark: taken by it, the session went to the stream renumbered on
// top of its old record, whose deliveries the next reader sent again
// (test/jepsen TestClusterFull seed 52, session 21: pub2#386 twice).
func TestReplacedCopyEndLeavesTheRollupMark(t *testing.T) {
	n := &Node{cfg: Config{Partitions: 1}, inc: "i1", local: newLocalInterest()}
	s := n.Sessions(store.NewMemory()).(*sessions)
	s.setEpoch("z", 5, true)
	s.disown("z")            // claimed by another node: the copy here is kept
	s.setEpoch("z", 7, true) // claimed here again, read from the stream
	s.adopt("z")
	s.Append(broker.Op{Kind: broker.OpSessionDel, ClientID: "z"}) // the copy's end
	if len(s.parts[0].ops) != 0 {
		t.Fatal("the kept copy's end was queued: the test does not check what it should")
	}
	s.Append(broker.Op{Kind: broker.OpSessionPut, ClientID: "z", Session: broker.StoredSession{ClientID: "z", Expiry: 60}})
	q := s.parts[0].ops
	if len(q) != 1 || !q[0].rollup {
		t.Fatalf("the adopted session's first op: %d queued, rollup %v; want a rollup", len(q), len(q) == 1 && q[0].rollup)
	}
}
