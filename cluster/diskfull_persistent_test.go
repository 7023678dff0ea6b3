package cluster_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"github.com/roost-mqtt/roost/internal/clustertest"
	"github.com/roost-mqtt/roost/internal/diskfull"
)

// TestClusterDiskFullPersistent: the persistent-session row of the promise
// table for a full disk. A persistent session lives on n3, whose store
// and JetStream replicas are on a small tmpfs that fills up. n3 cannot
// keep what is forwarded for the session in its store, so it holds it for
// the session in its replicated held subject (the other two replicas
// keep it) and confirms it once that append is replicated: the publisher
// on n1 keeps its connection and gets every PUBACK/PUBREC (0x00). Every
// acknowledged message reaches the session, QoS 2 once: when the disk is
// freed and the session stayed on n3 (its client reconnects there), and
// when its client moves to n1 while the disk is still full (Session
// Present); once freed again, n3 serves the session again.
//
// Before, n3 said it could not keep the message, and n1 closed the
// publisher's connection (outcome unknown) for every such publish: one
// full disk disconnected every publisher whose messages matched one of
// its sessions.
func TestClusterDiskFullPersistent(t *testing.T) {
	t.Parallel() // see harness_test.go
	mnt := diskfull.Tmpfs(t, "48m")
	cfg := filepath.Join(t.TempDir(), "roost.yaml")
	harness.WriteAtomic(t, cfg, []byte("store:\n  min_free: 4MiB\n  ballast: 1MiB\n"), 0o644)
	tc := harness.WrapCluster(t, clustertest.Start(t, clustertest.Options{Nodes: 3, Args: []string{"--config", cfg},
		Data: dataOn(mnt, "n3")}))
	n1, n3 := tc.Nodes[0], tc.Nodes[2]
	sub, pub := harness.PersistentPair(t, n3, n1, "dfp", harness.QueuedExpiry)
	harness.DrainInbox(sub, func(*paho.Publish) {})
	before := harness.PublishOwedQoS(t, n1, "dfp-pub", &pub, "dfp/q2", "before", 5, 2)
	checkOwed(t, sub, before, func(p string) bool { return strings.HasPrefix(p, "before-") })

	filler := filepath.Join(mnt, "filler")
	fill := func() {
		diskfull.Fill(t, filler)
		awaitFull(t, n3)
	}
	free := func() {
		if err := os.Remove(filler); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	defer free()

	// The session stays on n3 (its client connected there, then closed
	// by n3 when its acknowledgements cannot be stored); the disk is
	// freed and the client comes back to n3.
	got := map[string]int{}
	fill()
	held := publishFull(t, n1, &pub, "held", 20, sub, got)
	sub.Disconnect(&paho.Disconnect{})
	free()
	back := harness.Resume(t, n3, "dfp-sub", harness.QueuedExpiry, harness.PartitionBound)
	checkOwedOnce(t, back, held, got, "held-")

	// The client moves to n1 while n3's disk is full.
	fill()
	full := publishFull(t, n1, &pub, "full", 20, back, got)
	back.Disconnect(&paho.Disconnect{})
	moved := harness.Resume(t, n1, "dfp-sub", harness.QueuedExpiry, harness.PartitionBound)
	checkOwedOnce(t, moved, full, got, "full-")
	after := harness.PublishOwedQoS(t, n1, "dfp-pub", &pub, "dfp/q2", "moved", 5, 2)
	checkOwed(t, moved, after, func(p string) bool { return strings.HasPrefix(p, "moved-") })

	free()
	// Once freed, n3 takes the session back.
	moved.Disconnect(&paho.Disconnect{})
	again := harness.Resume(t, n3, "dfp-sub", harness.QueuedExpiry, harness.PartitionBound)
	last := harness.PublishOwedQoS(t, n1, "dfp-pub", &pub, "dfp/q2", "freed", 5, 2)
	checkOwed(t, again, last, func(p string) bool { return strings.HasPrefix(p, "freed-") })
}

// awaitFull waits until nd's store refuses QoS 1 publishes (0x97): it
// measures its free space every 100 ms, and a publish before it noticed
// is answered as the store then decides (docs/cluster.md, the disk-full
// rows).
func awaitFull(t *testing.T, nd *harness.Node) {
	t.Helper()
	probe := harness.Connect(t, nd, "dfp-probe")
	harness.Eventually(t, harness.PartitionBound, func() error {
		rc, closed := probe.TryPublish(t, &paho.Publish{Topic: "dfp-probe/full", QoS: 1, Payload: []byte("probe")})
		if closed {
			if err := harness.Redial(t, nd, "dfp-probe", &probe); err != nil {
				return err
			}
			return fmt.Errorf("probe's connection closed")
		}
		if rc != 0x97 {
			return fmt.Errorf("QoS 1 publish on %s: 0x%02X, want 0x97 (disk full)", nd.Name, rc)
		}
		return nil
	})
	probe.Disconnect(&paho.Disconnect{})
}

// publishFull publishes n mixed QoS 1/2 messages PREFIX-i on dfp/q1 and
// dfp/q2 through *pub on nd, and fails t unless each is acknowledged with
// 0x00 on the same connection. sub, the session's client (maybe closed by
// now), is drained into got as it goes.
func publishFull(t *testing.T, nd *harness.Node, pub **harness.Client, prefix string, n int, sub *harness.Client, got map[string]int) []string {
	t.Helper()
	var owed []string
	for i := range n {
		payload, rc, closed := publishMixed(t, nd, "dfp-pub", pub, "dfp", prefix, i)
		switch {
		case closed:
			t.Errorf("%s for a persistent session on the full node: the publisher's connection was closed, want 0x00", payload)
		case rc != 0:
			t.Errorf("%s for a persistent session on the full node: 0x%02X, want 0x00", payload, rc)
		default:
			owed = append(owed, payload)
		}
		harness.DrainInbox(sub, noteOnce(t, got))
	}
	return owed
}

// noteOnce counts the payloads a client of the session got, across its
// connections, and fails t for a QoS 2 one that came twice.
func noteOnce(t *testing.T, got map[string]int) func(*paho.Publish) {
	return func(p *paho.Publish) {
		s := string(p.Payload)
		if got[s]++; got[s] > 1 && p.QoS == 2 {
			t.Errorf("QoS 2 %q delivered %d times", s, got[s])
		}
	}
}

// checkOwedOnce reads c's messages until every payload of owed came on
// it or an earlier connection of the session (got), then until it is
// quiet for a second; it fails t for an owed one missing or a QoS 2
// message that came twice. Only payloads starting with prefix count.
func checkOwedOnce(t *testing.T, c *harness.Client, owed []string, got map[string]int, prefix string) {
	t.Helper()
	note := noteOnce(t, got)
	take := func(p *paho.Publish) {
		if strings.HasPrefix(string(p.Payload), prefix) {
			note(p)
		}
	}
	missing := func() []string {
		var m []string
		for _, p := range owed {
			if got[p] == 0 {
				m = append(m, p)
			}
		}
		return m
	}
	deadline := time.Now().Add(harness.PartitionBound)
	for len(missing()) > 0 && time.Now().Before(deadline) {
		select {
		case p := <-c.In:
			take(p)
		case <-time.After(time.Until(deadline)):
		}
	}
	if m := missing(); len(m) > 0 {
		t.Errorf("%s: %d of %d acknowledged messages never came: %v", c.ID, len(m), len(owed), m)
	}
	for range cap(c.In) + 1 {
		select {
		case p := <-c.In:
			take(p)
		case <-time.After(time.Second):
			return
		}
	}
}

// TestClusterDiskFullHeldAfterKill: n3's store is on a small tmpfs that
// fills up, its JetStream on a disk with room (cluster.data), so its
// JetStream goes on while its store keeps nothing. What the publisher on
// n1 is acknowledged for the persistent session on n3 is in the session's
// memory there and in n3's held subject; n3 is killed (kill -9) before
// its store could write it, then restarted with room again. Its follower
// of its held subject must not have acknowledged those held copies on the
// strength of the copies in memory: they are all the restarted node has.
// The client resuming on n3 gets every acknowledged message, QoS 2 once.
func TestClusterDiskFullHeldAfterKill(t *testing.T) {
	t.Parallel() // see harness_test.go
	mnt := diskfull.Tmpfs(t, "48m")
	dir := t.TempDir()
	cfg, cfg3 := filepath.Join(dir, "roost.yaml"), filepath.Join(dir, "n3.yaml")
	// No adoption meanwhile: the session stays n3's.
	common := "store:\n  min_free: 4MiB\n  ballast: 1MiB\ncluster:\n  adopt_after: 60s\n"
	harness.WriteAtomic(t, cfg, []byte(common), 0o644)
	harness.WriteAtomic(t, cfg3, []byte(common+"  data: "+filepath.Join(dir, "n3-jetstream")+"\n"), 0o644)
	tc := harness.WrapCluster(t, clustertest.Start(t, clustertest.Options{Nodes: 3, Args: []string{"--config", cfg},
		NodeArgs: func(name, _ string) []string {
			if name == "n3" {
				return []string{"--config", cfg3}
			}
			return nil
		},
		Data: dataOn(mnt, "n3")}))
	n1, n3 := tc.Nodes[0], tc.Nodes[2]
	pub, filler := offlineOnFull(t, n1, n3, mnt)
	owed := publishFull(t, n1, &pub, "kept", 20, nil, nil)
	// n3's follower acknowledges what a fetch brought at the fetch's end
	// (fetchWait, 2 s): long enough for it to have read (and, wrongly,
	// acknowledged) these copies. Nothing is asserted before the kill.
	time.Sleep(3 * time.Second)
	tc.Kill(n3, syscall.SIGKILL)
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	tc.Start(n3)
	back := harness.Resume(t, n3, "dfp-sub", harness.QueuedExpiry, harness.PartitionBound)
	checkOwed(t, back, owed, func(p string) bool { return strings.HasPrefix(p, "kept-") })
}

// TestClusterDiskFullHoldUnanswered: the partition stream of n3's held
// subject may have its leader on n3, whose JetStream the full disk shuts
// down: a hold it took is never answered, and the others elect a leader
// about 2 s later (seen: "timeout waiting for ack" for the first message
// after the fill, its publisher's connection closed). The fault
// hold-silent leaves n3's first three holds for its full store
// unanswered; the holds must be published again, and every publish on
// n1 acknowledged with 0x00 on the same connection, and delivered. That
// needs the election inside the forward's bound: nats-server elects 4-9
// s after the leader's last heartbeat, and with the default 5-s
// forward_timeout n1 closed the publisher's connection at silent-4 while
// n3's hold for it got "no response from stream" (a fresh clone on a
// quiet machine, session 32: the partition elected 9 s after the fill).
func TestClusterDiskFullHoldUnanswered(t *testing.T) {
	t.Parallel() // see harness_test.go
	mnt := diskfull.Tmpfs(t, "48m")
	cfg := filepath.Join(t.TempDir(), "roost.yaml")
	harness.WriteAtomic(t, cfg, []byte("store:\n  min_free: 4MiB\n  ballast: 1MiB\ncluster:\n  forward_timeout: 15s\n"), 0o644)
	tc := harness.WrapCluster(t, clustertest.Start(t, clustertest.Options{Nodes: 3, Args: []string{"--config", cfg},
		Env:  []string{"ROOST_TEST_FAULT=hold-silent=3@n3"},
		Data: dataOn(mnt, "n3")}))
	n1, n3 := tc.Nodes[0], tc.Nodes[2]
	pub, _ := offlineOnFull(t, n1, n3, mnt)
	owed := publishFull(t, n1, &pub, "silent", 6, nil, nil)
	if n := harness.CountLog(n3, "test fault: a hold for the full store left unanswered"); n != 3 {
		t.Errorf("n3 left %d holds unanswered, want 3 (the fault)", n)
	}
	moved := harness.Resume(t, n1, "dfp-sub", harness.QueuedExpiry, harness.PartitionBound)
	checkOwed(t, moved, owed, func(p string) bool { return strings.HasPrefix(p, "silent-") })
}

// dataOn puts node's data directory on mnt (a small disk of its own, to
// fill), the others' where the harness puts them.
func dataOn(mnt, node string) func(string) string {
	return func(name string) string {
		if name == node {
			return filepath.Join(mnt, name)
		}
		return ""
	}
}

// offlineOnFull puts dfp-sub's persistent session on full, offline, with
// dfp-pub connected to pubOn, then fills full's disk (mnt) until its
// store says it is full. The filler is removed when t ends, if it is
// still there.
func offlineOnFull(t *testing.T, pubOn, full *harness.Node, mnt string) (pub *harness.Client, filler string) {
	t.Helper()
	sub, pub := harness.PersistentPair(t, full, pubOn, "dfp", harness.QueuedExpiry)
	sub.Disconnect(&paho.Disconnect{})
	filler = filepath.Join(mnt, "filler")
	diskfull.Fill(t, filler)
	t.Cleanup(func() { os.Remove(filler) })
	awaitFull(t, full)
	return pub, filler
}
