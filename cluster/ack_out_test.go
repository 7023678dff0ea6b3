package cluster

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"slices"
	"testing"
	"time"
	"unsafe"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/packet"
)

// outReplies is a Node's replies with one publish's forward on "t/1" out
// to n3, whose routes close when gone is closed.
func outReplies(t *testing.T) (*Node, *pendingReply, chan struct{}) {
	t.Helper()
	n := &Node{}
	n.replies.m = map[uint64]*pendingReply{}
	gone := make(chan struct{})
	pr := n.replies.registerOut(time.Now().Add(time.Minute), "n3", gone, packet.QoS(1), "t/1", nil, 0, false)
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
		out = append(out, n.replies.registerOut(deadline, "n3", gone, packet.QoS(1), "t/1", nil, 0, false))
	}
	answered := n.replies.registerOut(deadline, "n3", gone, packet.QoS(1), "t/1", nil, 0, false)
	n.replies.resolve(answered.seq, ackTaken)
	n.replies.registerOut(deadline, "n2", other, packet.QoS(1), "t/1", nil, 0, false)
	if prs := n.replies.goneOut("n3", true); len(prs) != 0 {
		t.Fatalf("goneOut before n3 went away = %d forwards, want none", len(prs))
	}
	close(gone)
	if prs := n.replies.goneOut("n3", false); len(prs) != 0 {
		t.Fatalf("goneOut of those registered to n3 gone = %d forwards, want none: all were out before", len(prs))
	}
	prs := n.replies.goneOut("n3", true)
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
	out[0].held = true
	if prs := n.replies.goneOut("n3", true); len(prs) != len(out)-1 || prs[0] != out[1] {
		t.Fatalf("goneOut after the first was held = %d forwards, want the %d others", len(prs), len(out)-1)
	}
}

// forwardsTo3 is a node with no cluster whose forward registers one QoS 1
// publish out to n3 (the holdOut tests).
func forwardsTo3() (*Node, func() *pendingReply) {
	n := &Node{remote: newRemoteInterest()}
	n.replies.m = map[uint64]*pendingReply{}
	w := &publishOut{msg: &broker.Message{Topic: "t/1", QoS: 1}, targets: []target{{node: "n3"}}}
	deadline := time.Now().Add(time.Minute)
	return n, func() *pendingReply {
		return n.replies.registerOut(deadline, "n3", n.remote.goneCh("n3"), packet.QoS(1), "t/1", w, 0, false)
	}
}

// holdOut holds the forwards out to a node whose routes closed, once each
// (not answered, in the order sent: TestGoneOutInOrder), looking through
// every forward in flight only once per close: those out before a close
// the first time after it, those registered to the node gone already
// (its plan raced the drop) at any time; and again after the node came
// back and its routes closed a second time. No orphan interest: the holds
// append nothing (appendGone).
func TestHoldOutOncePerClose(t *testing.T) {
	n, forward := forwardsTo3()
	n.remote.heartbeat("n3", "i1", 1, time.Now())
	before := forward()
	n.remote.forgetUnrouted(map[string]bool{})
	if before.late {
		t.Fatal("a forward out before n3's routes closed counted as registered to n3 gone")
	}
	after := forward()
	if !after.late {
		t.Fatal("a forward registered to n3 gone not in replies.late")
	}
	n.holdOut("n3")
	if !before.held || !after.held {
		t.Fatalf("held after n3's routes closed: out before %v, registered after %v; want both", before.held, after.held)
	}
	if len(n.replies.late) != 0 {
		t.Fatalf("replies.late = %d once held, want none", len(n.replies.late))
	}
	later := forward()
	n.holdOut("n3")
	if !later.held {
		t.Fatal("a forward registered to n3 gone after holdOut's scan not held by the next holdOut")
	}
	// n3 back, a forward out to it, its routes closed again.
	n.remote.heartbeat("n3", "i2", 1, time.Now())
	again := forward()
	if again.late {
		t.Fatal("a forward out to n3 back counted as registered to n3 gone")
	}
	n.holdOut("n3") // n3 routed: nothing held
	if again.held {
		t.Fatal("a forward out to n3 held while its routes were open")
	}
	n.remote.forgetUnrouted(map[string]bool{})
	n.holdOut("n3")
	if !again.held {
		t.Fatal("a forward out to n3 before its second close not held: holdOut looked through only those registered after a close")
	}
	for _, pr := range []*pendingReply{before, after, later, again} {
		n.replies.settledOut(pr)
	}
	if len(n.replies.m) != 0 || len(n.replies.late) != 0 {
		t.Fatalf("registered %d, late %d after the ends, want none", len(n.replies.m), len(n.replies.late))
	}
}

// A node dropped for silence (no heartbeat for deadAfter: paused, cut off)
// ends the waits of the forwards out to it as a route close does: holdOut
// holds them at the drop, in the order sent, and the publisher's wait
// fails at once (errGone) for the hold to decide it. Only the route
// close did, and a forward out to a silent node waited for its deadline
// while the holds of later messages landed (test/jepsen TestClusterFull
// seed 941, long faults: ps1 got pub1#276-#279 after #280-#283;
// TestReproSilentHoldOrder). A late answer no longer counts; a forward
// out to the node back is not held.
func TestHoldOutAtSilence(t *testing.T) {
	n, forward := forwardsTo3()
	now := time.Now()
	n.remote.heartbeat("n3", "i1", 1, now)
	first, second := forward(), forward()
	if gone := n.remote.expire(now.Add(time.Second)); !slices.Equal(gone, []string{"n3"}) {
		t.Fatalf("expired %v, want n3", gone)
	}
	n.holdOut("n3")
	if !first.held || !second.held {
		t.Fatalf("held at n3's silence drop: %v, %v; want both", first.held, second.held)
	}
	n.replies.resolve(first.seq, ackTaken) // n3 back, answering: too late
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, pr := range []*pendingReply{first, second} {
		if err := n.await(ctx, pr); !errors.Is(err, errGone) {
			t.Fatalf("await after the silence drop = %v, want errGone", err)
		}
		n.replies.settledOut(pr)
	}
	n.remote.heartbeat("n3", "i1", 2, time.Now())
	back := forward()
	n.holdOut("n3")
	if back.held || back.late {
		t.Fatal("a forward out to n3 back held")
	}
	n.replies.resolve(back.seq, ackTaken)
	if err := n.await(ctx, back); err != nil {
		t.Fatalf("await of a forward to n3 back = %v", err)
	}
}

// A request per forward in flight and a publishOut per publish: each kept
// within its size class (128 and 256 bytes), the budget
// BenchmarkForwardPublish measures (bench/jepsen/RESULTS.md "hot25": a
// hold's copy in every request made it 288).
func TestForwardSizes(t *testing.T) {
	if s := unsafe.Sizeof(pendingReply{}); s > 128 {
		t.Errorf("pendingReply is %d bytes, want at most 128", s)
	}
	if s := unsafe.Sizeof(publishOut{}); s > 256 {
		t.Errorf("publishOut is %d bytes, want at most 256", s)
	}
}

// A claim that read the stream gets the forwards out to the session's
// previous node that node answered as taken only after the read
// (awaitOut), and delivers them here (deliverTakenLate): their ops there
// may have reached the stream after the read, and no hold has them
// (TestReproMovedBackHeldHere, session 27: q2-15 taken by n3 2.3 s after
// n2's claim read the stream, lost). One answered as not taken, or held
// for its node gone, is not the claim's to deliver: the publisher was
// told, or the follower of the node's held subject reads the hold. Each
// comes as the copy its node took (the forward's origin key), so a
// session that got a QoS 2 copy does not get it again, and one the read
// record holds is had.
func TestAwaitOutTaken(t *testing.T) {
	n := &Node{cfg: Config{Node: "n2", ForwardTimeout: 5 * time.Second}, inc: "i1",
		log: slog.New(slog.DiscardHandler), ctx: context.Background()}
	n.replies.m = map[uint64]*pendingReply{}
	s := &sessions{n: n}
	out := func(id uint64, payload string) *pendingReply { return publishOutToN3(t, n, id, payload) }
	taken, refused, held, had := out(7, "taken"), out(8, "refused"), out(9, "held"), out(10, "had")
	prs := outToN3(n)
	rec := &broker.StoredSession{ClientID: "s", Queue: []broker.StoredDelivery{{Msg: &broker.Message{Topic: "t/1", Payload: []byte("had"), From: "pub"}}}}
	aheads := n.outAheads(rec, prs)
	n.replies.resolve(taken.seq, ackTaken)
	n.replies.resolve(refused.seq, ackNotTaken)
	n.replies.settledOut(held) // held for n3 gone (holdForGone)
	n.replies.resolve(had.seq, ackTaken)
	got := s.awaitOut("s", "n3", prs)
	slices.SortFunc(got, func(a, b *pendingReply) int { return cmp.Compare(a.seq, b.seq) })
	if len(got) != 2 || got[0] != taken || got[1] != had {
		t.Fatalf("awaitOut = %d forwards, want the two answered as taken", len(got))
	}
	h := aheads[taken]
	if want := (originKey{node: "n2", inc: "i1", id: 7}).copy(); h.rm == nil || h.rm.Copy != want || string(h.rm.Payload) != "taken" || h.had {
		t.Fatalf("taken's ahead = %+v, want its forward's copy %x, not had", h.rm, want)
	}
	if !aheads[had].had {
		t.Fatal("a forward the read record holds not had")
	}
}

// TestDeliverTakenLatePlainOnly: a forward out that the session's previous
// node answered as taken after the claim read the stream comes to the
// session here for its plain subscriptions only. Its share group's turn
// was given there to one member, "taken" does not say which, and given
// here too it reached two members (seeds 869 and 875, session 28: QoS 2 at
// g1m0 on n3 and g1m1 on n1).
func TestDeliverTakenLatePlainOnly(t *testing.T) {
	n, srv := moveNode(t, 16)
	n.cfg.Node, n.inc = "n2", "i1"
	n.replies.m = map[uint64]*pendingReply{}
	s := &sessions{n: n}
	for _, c := range []struct {
		id, filter string
		want       bool
	}{
		{"member", "$share/g/t/#", false},
		{"plain", "t/#", true},
	} {
		pr := publishOutToN3(t, n, uint64(len(c.id)), c.id, "g\x00t/#")
		prs := outToN3(n)
		rec := &broker.StoredSession{ClientID: c.id, Expiry: 600,
			Subs: []broker.StoredSub{{Filter: c.filter, Opts: packet.SubOptions{QoS: 2}}}}
		srv.Adopt(rec)
		aheads := n.outAheads(rec, prs)
		n.replies.resolve(pr.seq, ackTaken)
		n.deliverTakenLate(c.id, "n3", s.awaitOut(c.id, "n3", prs), aheads)
		if got := srv.HasMessage(c.id, "pub", "t/1", []byte(c.id)); got != c.want {
			t.Errorf("%s (%s): a forward taken late by n3 queued here %v, want %v", c.id, c.filter, got, c.want)
		}
	}
}

// publishOutToN3 registers the forward to n3 of a QoS 2 publish on "t/1"
// by "pub" with id and payload, for n3's share groups groups.
func publishOutToN3(t *testing.T, n *Node, id uint64, payload string, groups ...string) *pendingReply {
	t.Helper()
	msg := &broker.Message{ID: id, Topic: "t/1", Payload: []byte(payload), QoS: 2, From: "pub"}
	pub, err := encodePublish(msg)
	if err != nil {
		t.Fatal(err)
	}
	w := &publishOut{n: n, msg: msg, pub: pub, targets: []target{{node: "n3", groups: groups}}}
	return n.replies.registerOut(time.Now().Add(time.Minute), "n3", make(chan struct{}), 2, "t/1", w, 0, false)
}
