package cluster

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// A forward whose node went away (routes closed) before it answered has
// an unknown outcome: the node may have recorded the message for a
// persistent session, or not. await must fail it (the publisher's
// connection is closed and the client sends again) rather than let the
// publisher be acknowledged: TestClusterTransports/NodeKill lost one
// acknowledged QoS 1 message for a persistent session on the killed node
// in each of two runs before this. An answer that came before the routes
// closed still counts.
func TestAwaitNodeGone(t *testing.T) {
	for _, tt := range []struct {
		name   string
		answer *ackResult
		want   error
	}{
		{"no answer", nil, errGone},
		{"taken before it went", ptr(ackTaken), nil},
		{"refused before it went", ptr(ackNotTaken), errNotTaken},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// Many rounds: with the answer in and the node gone, the
			// select picks either case at random.
			for range 50 {
				n := &Node{}
				n.replies.m = map[uint64]*pendingReply{}
				pr := n.replies.register(time.Now().Add(time.Minute))
				gone := make(chan struct{})
				pr.node, pr.gone, pr.qos = "n3", gone, packet.QoS(1)
				if tt.answer != nil {
					n.replies.resolve(pr.seq, *tt.answer)
				}
				close(gone)
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				err := n.await(ctx, pr)
				cancel()
				if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
					t.Fatalf("await = %v, want %v", err, tt.want)
				}
				if got := n.counters.failed[1].Load(); (tt.want != nil) != (got == 1) {
					t.Fatalf("failed forwards counted: %d", got)
				}
				if len(n.replies.m) != 0 {
					t.Fatalf("request still registered: %v", n.replies.m)
				}
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }
