package cluster

import (
	"slices"
	"testing"
	"time"
)

// BenchmarkPlan is a publish's routing decision (Forward's plan): three
// other nodes with plain subscribers, two share groups with members on
// two of them; held: one node also announces a hold key of one group
// (a restarted node's unsettled member), the case serving looks at.
func BenchmarkPlan(b *testing.B) {
	for _, held := range []bool{false, true} {
		name := "plain"
		if held {
			name = "held"
		}
		b.Run(name, func(b *testing.B) {
			r := newRemoteInterest()
			now := time.Now()
			keys := []ikey{{"t/#", ""}, {"t/#", "g0"}, {"t/#", "g1"}}
			snap := func(node string, keys []ikey) {
				r.heartbeat(node, "i", 1, now)
				r.applySnapshot(node, "i", 1, keys, true)
			}
			if held {
				snap("n2", append(slices.Clone(keys), persistShareKey("t/#", "g0").holdKey()))
			} else {
				snap("n2", keys)
			}
			snap("n3", keys)
			snap("n4", []ikey{{"t/#", ""}})
			local := newLocalInterest()
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if len(r.plan("t/1", uint64(i), local)) != 3 {
					b.Fatal("plan: want 3 targets")
				}
			}
		})
	}
}
