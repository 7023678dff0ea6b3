package cluster

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// outReplies is a Node's replies with one publish's forward on "t/1" out
// to n3, whose routes close when gone is closed.
func outReplies(t *testing.T) (*Node, *pendingReply, chan struct{}) {
	t.Helper()
	n := &Node{}
	n.replies.m = map[uint64]*pendingReply{}
	gone := make(chan struct{})
	pr := n.replies.registerOut(time.Now().Add(time.Minute), "n3", gone, packet.QoS(1), "t/1", goneHold{})
	return n, pr, gone
}

func outToN3(n *Node) []*pendingReply {
	return n.replies.outTo(func(node, topic string) bool { return node == "n3" && topic == "t/1" })
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// A stream claim waits for this node's forwards out to the session's
// previous node until each outcome is final (ord53, awaitOut): a forward
// whose node went away stays out, a late answer not counting, until it
// was held for that node; an answered one is final at the answer. The
// channel a claim waits on is made only when one asks (outTo), so a
// forward no claim waits for costs no more than its request.
func TestForwardOutSettled(t *testing.T) {
	t.Run("gone, then held", func(t *testing.T) {
		n, pr, gone := outReplies(t)
		close(gone)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := n.await(ctx, pr); !errors.Is(err, errGone) {
			t.Fatalf("await = %v, want errGone", err)
		}
		prs := outToN3(n)
		if len(prs) != 1 || prs[0] != pr {
			t.Fatalf("forwards out after the node went away = %v, want the one not held yet", prs)
		}
		n.replies.resolve(pr.seq, ackTaken) // too late: its routes closed
		if isClosed(pr.settled) {
			t.Fatal("a late answer settled a forward whose node went away before it was held")
		}
		select {
		case <-pr.ch:
			t.Fatal("a late answer reached the publisher's wait")
		default:
		}
		n.replies.settledOut(pr) // held for n3 (holdForGone)
		if !isClosed(pr.settled) {
			t.Fatal("settled not closed once held")
		}
		if prs := outToN3(n); len(prs) != 0 || len(n.replies.m) != 0 {
			t.Fatalf("still out: %v, registered %d", prs, len(n.replies.m))
		}
	})
	t.Run("answered", func(t *testing.T) {
		n, pr, _ := outReplies(t)
		prs := outToN3(n)
		if len(prs) != 1 {
			t.Fatalf("forwards out = %d, want 1", len(prs))
		}
		n.replies.resolve(pr.seq, ackTaken)
		// Final at the answer, before the publisher's wait ran.
		if !isClosed(prs[0].settled) {
			t.Fatal("an answered forward not settled")
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := n.await(ctx, pr); err != nil {
			t.Fatalf("await = %v", err)
		}
		n.replies.settledOut(pr) // a second end is a no-op
		if len(n.replies.m) != 0 {
			t.Fatalf("registered %d", len(n.replies.m))
		}
	})
	t.Run("timed out", func(t *testing.T) {
		n, pr, _ := outReplies(t)
		prs := outToN3(n)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := n.await(ctx, pr); err == nil {
			t.Fatal("await of a cancelled wait = nil")
		}
		if !isClosed(prs[0].settled) {
			t.Fatal("a forward whose wait ended not settled")
		}
	})
	t.Run("never waited", func(t *testing.T) {
		n, pr, _ := outReplies(t)
		prs := outToN3(n)
		n.replies.sweep(pr.deadline.Add(2 * time.Second))
		if !isClosed(prs[0].settled) || len(n.replies.m) != 0 {
			t.Fatalf("sweep past the deadline: settled %v, registered %d", isClosed(prs[0].settled), len(n.replies.m))
		}
	})
	t.Run("no claim waits", func(t *testing.T) {
		n, pr, _ := outReplies(t)
		n.replies.resolve(pr.seq, ackTaken)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := n.await(ctx, pr); err != nil {
			t.Fatalf("await = %v", err)
		}
		n.replies.settledOut(pr)
		if pr.settled != nil {
			t.Fatal("a settled channel made for a forward no claim waited for")
		}
		if prs := outToN3(n); len(prs) != 0 {
			t.Fatalf("forwards out after its answer: %d", len(prs))
		}
	})
}

// goneOut gives holdOut the forwards out to a node gone, not answered and
// not held yet, in the order they were sent (seed 221's pub1#139 was held
// after #140-#142): an answered one is final, one to another node or
// still routed waits, one held is not held again.
func TestGoneOutInOrder(t *testing.T) {
	n := &Node{}
	n.replies.m = map[uint64]*pendingReply{}
	gone, other := make(chan struct{}), make(chan struct{})
	deadline := time.Now().Add(time.Minute)
	var out []*pendingReply
	for range 40 {
		out = append(out, n.replies.registerOut(deadline, "n3", gone, packet.QoS(1), "t/1", goneHold{}))
	}
	answered := n.replies.registerOut(deadline, "n3", gone, packet.QoS(1), "t/1", goneHold{})
	n.replies.resolve(answered.seq, ackTaken)
	n.replies.registerOut(deadline, "n2", other, packet.QoS(1), "t/1", goneHold{})
	if prs := n.replies.goneOut("n3"); len(prs) != 0 {
		t.Fatalf("goneOut before n3 went away = %d forwards, want none", len(prs))
	}
	close(gone)
	prs := n.replies.goneOut("n3")
	if len(prs) != len(out) {
		t.Fatalf("goneOut = %d forwards, want the %d not answered", len(prs), len(out))
	}
	for i, pr := range prs {
		if pr != out[i] {
			t.Fatalf("goneOut[%d] is sequence %d, want %d: not in the order sent", i, pr.seq, out[i].seq)
		}
		if !pr.unanswerable {
			t.Fatalf("goneOut[%d]: a late answer would still count", i)
		}
	}
	out[0].hold.done = true
	if prs := n.replies.goneOut("n3"); len(prs) != len(out)-1 || prs[0] != out[1] {
		t.Fatalf("goneOut after the first was held = %d forwards, want the %d others", len(prs), len(out)-1)
	}
}
