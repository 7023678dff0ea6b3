package cluster

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
)

// benchForwardNode is a Node enough for Forward without an engine: peers
// each with a plain subscription to t/#, their senders made (no send
// loop: what is queued stays, benchDrain empties it), no node dropped.
func benchForwardNode(peers ...string) *Node {
	n := &Node{cfg: Config{Node: "n1", ForwardTimeout: time.Hour}, ctx: context.Background(),
		local: newLocalInterest(), remote: newRemoteInterest(), mv: &liveMoves{}, senders: map[string]*sender{}}
	n.replies.m = map[uint64]*pendingReply{}
	n.sess = &sessions{n: n, persist: newPersistentFilters(n.local)}
	n.catch.done.Store(true)
	now := time.Now()
	for _, p := range peers {
		n.remote.heartbeat(p, "i", 1, now)
		n.remote.applySnapshot(p, "i", 1, []ikey{{"t/#", ""}}, true)
		n.senders[p] = &sender{subj: pubSubject + "." + p, wake: make(chan struct{}, 1), header: []byte{batchVersion}}
	}
	return n
}

// benchDrain drops what n's senders queued, as their send loops would.
func benchDrain(n *Node) {
	for _, s := range n.senders {
		s.take()
	}
}

// BenchmarkForwardPublish is a QoS 1 publish's Forward on its node, to
// subscribers on one or two other nodes, with the forwards answered and
// the publisher's wait run: the plan, the hold checks (no node dropped,
// no hold key: the common case), the encoding, the requests and their
// ends. No engine: the batches are dropped, not sent.
func BenchmarkForwardPublish(b *testing.B) {
	for _, peers := range [][]string{{"n2"}, {"n2", "n3"}} {
		b.Run("targets="+strconv.Itoa(len(peers)), func(b *testing.B) {
			n := benchForwardNode(peers...)
			msg := &broker.Message{Topic: "t/1", Payload: make([]byte, 64), QoS: 1, From: "pub-1"}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				msg.ID = uint64(i)
				before := n.replies.seq.Load()
				_, wait := n.Forward(msg)
				for seq := before + 1; seq <= n.replies.seq.Load(); seq++ {
					n.replies.resolve(seq, ackTaken)
				}
				if err := wait(); err != nil {
					b.Fatal(err)
				}
				if i%64 == 0 {
					benchDrain(n)
				}
			}
		})
	}
}

// BenchmarkHoldOut is what a publish held for a dropped node (n4) costs
// its routing before the hold itself, with inflight forwards out to live
// nodes and none to n4 (holdOut: the forwards out to n4 are held first).
func BenchmarkHoldOut(b *testing.B) {
	for _, inflight := range []int{0, 256, 4096} {
		b.Run("inflight="+strconv.Itoa(inflight), func(b *testing.B) {
			n := benchForwardNode("n2", "n3")
			msg := &broker.Message{Topic: "t/1", Payload: make([]byte, 64), QoS: 1, From: "pub-1"}
			for i := range inflight / 2 {
				msg.ID = uint64(i + 1)
				n.Forward(msg) // two forwards each, never answered
				if i%64 == 0 {
					benchDrain(n)
				}
			}
			benchDrain(n)
			b.ReportAllocs()
			for b.Loop() {
				n.holdOut("n4")
			}
		})
	}
}
