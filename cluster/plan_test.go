package cluster

import (
	"slices"
	"testing"
	"time"
)

// TestPlanLeavesHeldGroupNode: a share group whose members are on a node
// that holds for the group (a hold key: a restarted node's unsettled
// member) and on one that does not goes to the second only, so that its
// members get each publisher's messages one way (serving); with no other
// node, or every node holding, the turns are as before.
func TestPlanLeavesHeldGroupNode(t *testing.T) {
	now := time.Now()
	group := ikey{"t/#", "g0"}
	hold := persistShareKey("t/#", "g0").holdKey()
	for _, tt := range []struct {
		name  string
		nodes map[string][]ikey
		want  []string // the nodes that serve g0 over ten ids
	}{
		{"held and live", map[string][]ikey{"n2": {group, hold}, "n3": {group}}, []string{"n3"}},
		{"held only", map[string][]ikey{"n2": {group, hold}}, []string{"n2"}},
		{"all held", map[string][]ikey{"n2": {group, hold}, "n3": {group, hold}}, []string{"n2", "n3"}},
		{"none held", map[string][]ikey{"n2": {group}, "n3": {group}}, []string{"n2", "n3"}},
		{"held, another group's", map[string][]ikey{"n2": {group, persistShareKey("t/#", "g1").holdKey()}, "n3": {group}}, []string{"n2", "n3"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newRemoteInterest()
			for node, keys := range tt.nodes {
				r.applySnapshotFor(t, node, keys, now)
			}
			var served []string
			for id := range uint64(10) {
				targets, left := r.planHeld("t/1", id, newLocalInterest())
				var to []string
				for _, tg := range targets {
					if slices.Contains(tg.groups, group.groupKey()) {
						to = append(to, tg.node)
					}
				}
				if len(to) != 1 {
					t.Fatalf("id %d: g0 planned to %v, want one node", id, to)
				}
				if !slices.Contains(served, to[0]) {
					served = append(served, to[0])
				}
				if wantLeft := tt.name == "held and live"; (len(left) > 0) != wantLeft {
					t.Errorf("id %d: left out %q", id, left)
				}
			}
			slices.Sort(served)
			if !slices.Equal(served, tt.want) {
				t.Errorf("g0 served by %v, want %v", served, tt.want)
			}
		})
	}
}
