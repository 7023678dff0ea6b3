package cluster

import "testing"

// BenchmarkPublishGate is the live-move gate's cost per publish on a
// cluster node with no move in progress (its read side, taken around each
// publish's routing and each forwarded message's delivery), by as many
// goroutines as GOMAXPROCS at once: compare with the cost of a publish
// (broker BenchmarkFanIn8QoS0, per message).
func BenchmarkPublishGate(b *testing.B) {
	n := &Node{}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n.LockPublish()
			n.UnlockPublish()
		}
	})
}
