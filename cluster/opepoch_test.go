package cluster

import (
	"testing"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/store"
)

// An op goes to the stream with the epoch its node held for the id when
// the op happened, not when it is sent: a restarted node ends a restored
// copy that another node owns (epoch 0 here: readers skip it), and a claim
// of the id here before that op was sent set the id's epoch anew, under
// which the stale end was read as the session's end (TestClusterFull seed
// 41: Session Present 0, 194 acknowledged messages lost).
func TestOpEpochIsTheAppendTimeOne(t *testing.T) {
	n := &Node{cfg: Config{Partitions: 2}, local: newLocalInterest()}
	s := n.Sessions(store.NewMemory()).(*sessions)
	s.restored = []string{"mine", "gone"}
	// Before the node is ready: the restored sessions' ops wait.
	s.Append(broker.Op{Kind: broker.OpSubPut, ClientID: "mine", Sub: broker.StoredSub{Filter: "a"}})
	s.Append(broker.Op{Kind: broker.OpSessionDel, ClientID: "gone"}) // owned elsewhere: dropped here
	// start: the owners read, "mine" is this node's at epoch 3.
	s.mu.Lock()
	s.epochs["mine"] = 3
	s.ready = true
	s.setQueuedEpochsLocked()
	s.mu.Unlock()
	s.setEpoch("gone", 4, false) // a client claims it here before the end was sent
	s.Append(broker.Op{Kind: broker.OpSessionPut, ClientID: "gone", Session: broker.StoredSession{Expiry: 60}})
	want := map[string][]uint64{"mine": {3}, "gone": {0, 4}}
	got := map[string][]uint64{}
	for p := range s.parts {
		for _, op := range s.parts[p].ops {
			if !op.epochSet {
				t.Errorf("%s op %v without its epoch", op.id, op.kind)
			}
			got[op.id] = append(got[op.id], op.epoch)
		}
	}
	for id, w := range want {
		if len(got[id]) != len(w) || got[id][0] != w[0] || got[id][len(w)-1] != w[len(w)-1] {
			t.Errorf("%s: epochs %v, want %v", id, got[id], w)
		}
	}
}
