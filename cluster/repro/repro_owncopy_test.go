package repro_test

import (
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestReproOwnCopyReplaced: a claim back onto the node that still owns
// its copy of the session reads the stream (the previous owner, whose
// claim came in between, died without answering) and adopts the record
// in place of the copy. The copy, in the server all along, took what was
// forwarded to it after the read; the record has none of it, and the held
// copies of the same messages were taken for delivered (the copy, taken
// from the stream lately, is watched: originWatch). Every message
// published between the read and the adoption was lost (test/jepsen
// TestClusterFull short faults, seed 534: 26 for ps0; bench/jepsen/
// RESULTS.md, "runs26").
//
// n1 takes oc-sub from the stream after n2's kill; n2, back, claims it
// and dies before it asks n1 to let go (delay-release), and n1 does not
// fence its copy (held-pending: its watcher leaves the id alone, as n3's
// claim back came before its watcher saw n1's record in the seed). The
// client's CONNECT on n1 then claims it back from n2, reads the stream
// and waits before the adoption (adopt-wait), while oc-pub on n3
// publishes on.
func TestReproOwnCopyReplaced(t *testing.T) {
	t.Parallel() // see harness.Main
	const id = "oc-sub"
	tc := harness.StartClusterFault(t, 3, "held-pending="+id+"@n1,adopt-wait="+id+"@n1,delay-release="+id+"@n2")
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	_, pub := harness.PersistentPair(t, n2, n3, "oc", 600)
	pp := &pacedPub{t: t, nd: n3, id: "oc-pub", prefix: "oc", pub: pub}

	tc.Kill(n2, syscall.SIGKILL)
	c := harness.Resume(t, n1, id, 600, 60*time.Second)
	c.Disconnect(&paho.Disconnect{})
	tc.WaitLog(n1, "client_id="+id+` reason="client disconnected normally"`, 1, harness.Wait)

	tc.Start(n2)
	expiry := uint32(600)
	connect := &paho.Connect{ClientID: id, CleanStart: false, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}
	// Tried again while n2's CONNECTs are refused (its restored copy
	// not settled yet, say), until one claims.
	const claimed = `"client id claimed from another node" node=n2 client_id=` + id
	go func() {
		for start := time.Now(); harness.CountLog(n2, claimed) == 0 && time.Since(start) < 30*time.Second; {
			if c, _, err := harness.TryConnect(t, n2, connect); err == nil {
				c.Disconnect(&paho.Disconnect{})
			}
		}
	}()
	tc.WaitLog(n2, claimed, 1, 40*time.Second)
	tc.Kill(n2, syscall.SIGKILL)

	c = pp.resume(n1, id)
	const took = `"cluster: a session read from the stream took what this node's own copy got since" node=n1 client_id=` + id
	if harness.CountLog(n1, `"client id claimed from another node" node=n1 client_id=`+id+" previous=n2") < 2 ||
		harness.CountLog(n1, `"session fenced`) > 0 {
		t.Logf("the claim back missed its path; n1:\n%s", harness.GrepLog(n1, "client_id="+id))
	}
	t.Logf("path: n1 took its own copy's deliveries %d times", harness.CountLog(n1, took))
	pp.check(c, n3, n1)
}
