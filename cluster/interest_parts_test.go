package cluster

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/clustertest"
	"github.com/roost-mqtt/roost/internal/eventually"
)

// TestInterestBeyondOneMessage: a node whose interest does not fit in one
// NATS message (max_payload, 8 MiB: about 400,000 filters) still gets it
// to the others, as a snapshot in parts and as deltas in several
// messages. Here the limit is 1 KiB, so a few thousand filters need
// many messages of each kind. Before, the snapshot's one answer failed and
// the other node never learnt the interest: messages published there for
// these subscribers were acknowledged and went nowhere.
func TestInterestBeyondOneMessage(t *testing.T) {
	t.Parallel() // in-process engines on OS-picked ports: it waits on elections, beside the process tests
	t.Run("SmallLimit", func(t *testing.T) { testInterestBeyond(t, 1024, 3000, 2000) })
	// The engine's own limit: 8 MiB is about 440,000 of these filters.
	// It failed before the parts (b never learnt a's interest); it takes
	// 20 s, 80 s under -race, so the suite leaves it out.
	t.Run("MaxPayload", func(t *testing.T) {
		if !*bigInterest {
			t.Skip("run with -cluster.big-interest")
		}
		testInterestBeyond(t, 0, 500_000, 500_000)
	})
}

var bigInterest = flag.Bool("cluster.big-interest", false, "TestInterestBeyondOneMessage: also past the engine's real max_payload (a million filters)")

func testInterestBeyond(t *testing.T, limit, first, second int) {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	addrs := []string{freeAddr(t), freeAddr(t)}
	a := startInProcess(t, "a", addrs[0], addrs[1], limit, log)
	for i := range first {
		a.Subscribed(fmt.Sprintf("devices/%d/cmd", i), "")
	}
	// b learns a's interest from a snapshot: a answers in parts.
	b := startInProcess(t, "b", addrs[1], addrs[0], limit, log)
	entriesOf := func(nd *Node, peer string) (int, bool) {
		for _, p := range nd.remote.status() {
			if p.name == peer {
				return p.entries, p.synced
			}
		}
		return 0, false
	}
	eventually.True(t, 60*time.Second, func() bool {
		n, synced := entriesOf(b, "a")
		return synced && n == first
	}, "b did not learn a's %d filters from its snapshot", first)
	// Deltas of one burst, more than one message's worth.
	for i := range second {
		a.Subscribed(fmt.Sprintf("phones/%d/inbox", i), "g")
	}
	eventually.True(t, 30*time.Second, func() bool {
		n, synced := entriesOf(b, "a")
		return synced && n == first+second
	}, "b did not learn a's %d new filters from its deltas", second)
	for _, topic := range []string{"devices/0/cmd", fmt.Sprintf("devices/%d/cmd", first-1), fmt.Sprintf("phones/%d/inbox", second-1)} {
		if targets := b.remote.plan(topic, 1, b.local); len(targets) != 1 || targets[0].node != "a" {
			t.Errorf("b routes %s to %+v, want a", topic, targets)
		}
	}
}

// startInProcess starts a one-replica cluster node in this process, with
// its broker attached; both stop when the test ends.
func startInProcess(t *testing.T, name, listen, peer string, limit int, log *slog.Logger) *Node {
	t.Helper()
	nd, err := Start(Config{Node: name, Listen: listen, Peers: []string{peer}, Replicas: 1, Unsafe: true, Data: t.TempDir()}, 1<<20, log)
	if err != nil {
		t.Fatal(err)
	}
	nd.interestMax = limit
	srv, err := broker.New(broker.Options{Logger: log, SysInterval: -1, Cluster: nd})
	if err != nil {
		nd.Close()
		t.Fatal(err)
	}
	if err := nd.Attach(srv); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Shutdown(t.Context())
		nd.Close()
	})
	return nd
}

// freeAddr returns a 127.0.0.1 address with a free port reserved for this
// process, for a route listener (which needs a fixed port). Not bind(":0"):
// both ports are picked before either node starts, b's seconds before, and
// this test runs beside the process tests, whose clients dial out from
// 127.0.0.1's ephemeral ports (one took a's port once: "address already
// in use"); testport's ports are below the ephemeral range.
func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := clustertest.FreeAddr("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return addr
}
