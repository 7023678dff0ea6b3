package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// BenchmarkForwardReply is what a publish's QoS 1/2 forward costs its
// node in replies, from its registration to its end (answered, then the
// publisher's wait and settledOut), with 256 others in flight, by as many
// goroutines as GOMAXPROCS at once (the publishers' read loops and the
// confirmations' reader share the lock). No claim waits (outTo): the
// common case.
func BenchmarkForwardReply(b *testing.B) {
	n := &Node{}
	n.replies.m = map[uint64]*pendingReply{}
	deadline := time.Now().Add(time.Hour)
	gone := make(chan struct{})
	for range 256 {
		n.replies.registerOut(deadline, "n2", gone, packet.QoS(1), "t/other", nil, 0, false)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			pr := n.replies.registerOut(deadline, "n2", gone, packet.QoS(1), "t/1", nil, 0, false)
			n.replies.resolve(pr.seq, ackTaken)
			if err := n.await(ctx, pr); err != nil {
				b.Fatal(err)
			}
			n.replies.settledOut(pr)
		}
	})
}
