package repro_test

import (
	"context"
	"fmt"
	"hash/fnv"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"github.com/roost-mqtt/roost/internal/clustertest"
)

// TestReproOpOrderRollup: a node's session ops must reach the stream in
// the order it wrote them. The partition sender publishes without waiting
// for earlier acknowledgements; when one publish got no acknowledgement (a
// leader change) it sent everything from there again, so an op published
// after it could be stored first: a reader in between saw the later op
// alone, and when the lost one was an adoption's rollup, it landed last
// and removed the ops stored before it, while their acknowledgements
// (duplicates by message id) came all the same (test/jepsen TestClusterFull
// seed 41: ps0's record had a later op of n2 without n2's earlier
// adoption; 141 acknowledged messages lost). Here n1 dies with oo-sub's
// session, the survivor that adopts it (the janitor) loses the adoption's
// rollup once (the fault rollup-lost); publishers on that node (a paced
// one, and a few in parallel) publish to oo-sub from the adoption on, the
// adopter is killed once its sender sent the rollup again (and n1 is
// back), and oo-sub resumes on the third node from the stream: every
// acknowledged message must reach it. Nothing is published while n1 is
// dead before the adoption: what was held for n1 then is another path
// (the adopter's followers; RESULTS.md, branch oporder).
func TestReproOpOrderRollup(t *testing.T) {
	t.Parallel() // see harness.Main
	const id = "oo-sub"
	adopter := adopterName(id, "n2", "n3")
	other := map[string]string{"n2": "n3", "n3": "n2"}[adopter]
	// The subscriber reads nothing until it resumes: its queue takes
	// everything published meanwhile.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "rollup-lost=" + id + "@" + adopter, Config: "cluster:\n  adopt_after: 2s\nlimits:\n  max_queued: 100000\n"})
	byName := map[string]*harness.Node{}
	for _, nd := range tc.Nodes {
		byName[nd.Name] = nd
	}
	n1, ad, ot := tc.Nodes[0], byName[adopter], byName[other]
	_, pub := harness.PersistentPair(t, n1, ad, "oo", 600)
	pp := &pacedPub{t: t, nd: ad, id: "oo-pub", prefix: "oo", pub: pub}
	b := newBurst(t, ad, "oo", 4)

	tc.Kill(n1, syscall.SIGKILL)
	const lost, resent = "test fault: a rollup is not published", "session ops not replicated yet; retrying"
	tc.WaitLog(ad, lost, 1, 60*time.Second)
	b.start()
	for start := time.Now(); !loggedAfter(ad, lost, resent); {
		if time.Since(start) > 60*time.Second {
			t.Fatalf("%s did not send the rollup of %s again within 60 s; %s:\n%s", adopter, id, adopter, harness.GrepLog(ad, "client_id="+id, "cluster:"))
		}
		pp.publish()
	}
	if harness.CountLog(ad, `"session of a silent node adopted" node=`+adopter+` client_id=`+id) == 0 {
		t.Fatalf("%s lost a rollup of %s but did not adopt it: the test missed its path; %s:\n%s", adopter, id, adopter,
			harness.GrepLog(ad, "client_id="+id))
	}
	// Some after the rollup too: the record must have them as well.
	for range 20 {
		pp.publish()
	}
	// n1 back first (a quorum once the adopter is gone): it drops its
	// restored copy, owned elsewhere.
	restored := harness.WatchRestored(n1, id)
	tc.Start(n1)
	restored.Wait(t, 60*time.Second, pp.publish) // dropped, or fenced before the owners read
	burst, unknown := b.stop()
	pp.want = append(pp.want, burst...)
	pp.unknown += unknown
	pp.nd = ot // the publisher's node dies: it goes on on the other
	tc.Kill(ad, syscall.SIGKILL)
	c := pp.resume(ot, id)
	pp.check(c, ad, ot)
}

// burst is publishers publishing QoS 1 messages PREFIX-bK-0, ... to
// PREFIX/q1 side by side, each waiting for its PUBACK: several ops of the
// subscriber's in flight at once, where the paced publisher has one.
type burst struct {
	prefix string
	pubs   []*clustertest.Client
	stopc  chan struct{}
	done   chan burstResult
}

type burstResult struct {
	acked   []string
	unknown int
}

// newBurst connects n publishers to nd; start starts them.
func newBurst(t *testing.T, nd *harness.Node, prefix string, n int) *burst {
	t.Helper()
	b := &burst{prefix: prefix, stopc: make(chan struct{}), done: make(chan burstResult, n)}
	for k := range n {
		c, _, err := clustertest.Dial(t, nd.MQTT, &paho.Connect{ClientID: fmt.Sprintf("%s-b%d", prefix, k), CleanStart: true, KeepAlive: 30})
		if err != nil {
			t.Fatalf("burst publisher %d: %v", k, err)
		}
		b.pubs = append(b.pubs, c)
	}
	return b
}

func (b *burst) start() {
	prefix := b.prefix
	for k, c := range b.pubs {
		go func() {
			var r burstResult
			defer func() { b.done <- r }()
			for i := 0; ; i++ {
				select {
				case <-b.stopc:
					return
				default:
				}
				m := fmt.Sprintf("%s-b%d-%d", prefix, k, i)
				ctx, cancel := context.WithTimeout(context.Background(), harness.PublishBound)
				ack, err := c.Publish(ctx, &paho.Publish{Topic: prefix + "/q1", QoS: 1, Payload: []byte(m)})
				cancel()
				if err != nil || ack == nil || ack.ReasonCode >= 0x80 {
					r.unknown++ // closed, or refused: not owed; this publisher stops
					return
				}
				r.acked = append(r.acked, m)
			}
		}()
	}
}

// stop ends the publishers and returns what was acknowledged to them and
// how many outcomes are unknown.
func (b *burst) stop() ([]string, int) {
	close(b.stopc)
	var acked []string
	unknown := 0
	for range b.pubs {
		r := <-b.done
		acked = append(acked, r.acked...)
		unknown += r.unknown
	}
	return acked, unknown
}

// adopterName is the janitor's choice among nodes for id (adopterOf in
// janitor.go): the highest FNV-64a hash of the id, a zero byte and the
// node's name.
func adopterName(id string, nodes ...string) string {
	var best string
	var bestH uint64
	for _, node := range nodes {
		h := fnv.New64a()
		h.Write([]byte(id))
		h.Write([]byte{0})
		h.Write([]byte(node))
		if v := h.Sum64(); best == "" || v > bestH || v == bestH && node < best {
			best, bestH = node, v
		}
	}
	return best
}

// loggedAfter reports whether nd's log has a line holding then after the
// first line holding first.
func loggedAfter(nd *harness.Node, first, then string) bool {
	b, _ := os.ReadFile(nd.LogPath)
	seen := false
	for _, l := range strings.Split(string(b), "\n") {
		switch {
		case !seen:
			seen = strings.Contains(l, first)
		case strings.Contains(l, then):
			return true
		}
	}
	return false
}
