package cluster

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/store"
)

// TestOpsSentAgainAtElection: a session op sent to its partition stream
// while the stream has no leader is dropped without an answer; it goes
// again once a leader is elected (errElected), and its Wait returns well
// within ForwardTimeout. Before, it went again only when ForwardTimeout ran
// out, the bound of the Wait itself: the Wait failed and the broker closed
// the connection waiting on it (cluster/repro TestReproKeptSinceUnfinished
// at load, session 31: n3, partition 0's leader, paused; n1 led 1 s after
// n2's batch, which went again 15 s after it was sent, when n2 closed the
// subscriber's connection).
//
// On three in-process engines: the leader of the client's partition
// stream is cut off from the other two (its route proxies closed, as a
// network cut); the op is appended on another node at once, before the two
// elect a leader (nats-server's election timeout is seconds).
func TestOpsSentAgainAtElection(t *testing.T) {
	t.Parallel() // in-process engines: it waits on their elections, beside the process tests
	const bound = 30 * time.Second
	logs := make([]*syncBuf, 3)
	nodes := startEnginesWith(t, 3, func(i int, cfg *Config) *slog.Logger {
		cfg.ForwardTimeout = bound
		logs[i] = &syncBuf{}
		return slog.New(slog.NewTextHandler(logs[i], nil))
	})
	for _, nd := range nodes {
		nd.awaitMeta(30 * time.Second)
	}
	const id = "ack-sub"
	probe := &sessions{n: nodes[0]}
	p := probe.partition(id)
	js0, err := jetstream.New(nodes[0].eng.nc)
	if err != nil {
		t.Fatal(err)
	}
	jsStep(t, "create the partition stream", func(ctx context.Context) error {
		return probe.openStream(ctx, js0, p)
	})
	var leader string
	jsStep(t, "find its leader", func(ctx context.Context) error {
		st, err := js0.Stream(ctx, streamName(p))
		if err != nil {
			return err
		}
		if leader = st.CachedInfo().Cluster.Leader; leader == "" {
			return fmt.Errorf("no leader yet")
		}
		return nil
	})
	var cut, sender *Node
	for _, nd := range nodes {
		switch {
		case nd.cfg.Node == leader:
			cut = nd
		case sender == nil:
			sender = nd
		}
	}
	if cut == nil {
		t.Fatalf("the leader %q is none of the nodes", leader)
	}
	s := startSender(t, sender)
	put := func() error {
		return s.Wait(s.Append(broker.Op{Kind: broker.OpSessionPut, ClientID: id, Session: broker.StoredSession{Expiry: 60}}))
	}
	if err := put(); err != nil {
		t.Fatalf("an op before the cut: %v", err)
	}

	cutOff(nodes, cut)
	began := time.Now()
	err = put()
	took := time.Since(began)
	if err != nil {
		t.Fatalf("the op appended at the cut of %s, the leader: %v after %v (sent again only at forward_timeout)", leader, err, took.Round(time.Millisecond))
	}
	again := strings.Count(logs[indexOf(nodes, sender)].String(), errElected.Error())
	t.Logf("the op appended on %s at the cut of %s confirmed after %v; sent again at an election %d times", sender.cfg.Node, leader, took.Round(time.Millisecond), again)
	if again == 0 {
		// Confirmed without a re-send: the publish reached a leader
		// (elected before it), not the path under test.
		t.Skipf("the op landed without a re-send (%v): a leader was elected before it was sent", took)
	}
}

// startSender makes nd's replicated store and starts its partition
// senders and its election watch, as sessions.start does once the owners
// are read (none here).
func startSender(t *testing.T, nd *Node) *sessions {
	t.Helper()
	s := nd.Sessions(store.NewMemory()).(*sessions)
	js, err := jetstream.New(nd.eng.nc, jetstream.WithPublishAsyncTimeout(nd.cfg.ForwardTimeout))
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.js, s.ready = js, true
	s.mu.Unlock()
	s.watchElections()
	nd.wg.Add(len(s.parts))
	for p := range s.parts {
		go s.sendPart(p)
	}
	return s
}

// cutOff cuts nd off from the other nodes: its route proxies and theirs to
// it close, with the routes through them, and refuse new ones.
func cutOff(nodes []*Node, nd *Node) {
	for _, o := range nodes {
		for _, px := range o.eng.proxies {
			if o == nd || px.peer == nd.cfg.Listen {
				px.close()
			}
		}
	}
}

func indexOf(nodes []*Node, nd *Node) int {
	for i, o := range nodes {
		if o == nd {
			return i
		}
	}
	return -1
}

// syncBuf is a bytes.Buffer for a logger written from many goroutines.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
