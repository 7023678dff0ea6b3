package repro_test

import (
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestReproKeptNamedGone: TestReproHeldBackGone's path with the old
// owner's own held subject named at its live handover (name-own-always
// on n2). n3's move asks n2 to finish only once n2 is gone (finish-gone)
// and takes what n2 handed over first; what n2's disowned copy kept
// after its answer is read from n2's subject, from the place n2 named
// (keptBy), where a named place skipped the kept copies (heldPos.copyHas:
// as if a finish had carried them). Every acknowledged message must reach
// the client on n3, a QoS 2 one once.
func TestReproKeptNamedGone(t *testing.T) {
	t.Parallel() // see harness.Main
	const id = "kg-sub"
	cfg := filepath.Join(t.TempDir(), "roost.yaml")
	harness.WriteAtomic(t, cfg, []byte("cluster:\n  adopt_after: 60s\n  forward_timeout: 15s\nlimits:\n  max_queued: 100000\n"), 0o644)
	tc := harness.StartClusterFault(t, 3, "finish-gone="+id+"@n3,interest-late=n3@n1,name-own-always="+id+"@n2", "--config", cfg)
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	sub, pub := harness.PersistentPair(t, n2, n1, "kg", harness.QueuedExpiry)
	sub.Disconnect(&paho.Disconnect{}) // the session stays on n2, offline
	tc.WaitLog(n2, "client_id="+id+` reason="client disconnected normally"`, 1, harness.Wait)
	pp := &pacedPub{t: t, nd: n1, id: "kg-pub", prefix: "kg", pub: pub}
	for range 10 {
		pp.publish()
	}

	claimOn(t, tc, n3, id, harness.QueuedExpiry)
	const waits = `"cluster: test fault: the move's finish waits until the previous owner is gone" node=n3 client_id=` + id
	for start := time.Now(); harness.CountLog(n3, waits) == 0; {
		if time.Since(start) > 60*time.Second {
			t.Fatalf("n3's move of %s did not reach its finish within 60 s; n3:\n%s", id, harness.GrepLog(n3, "client_id="+id))
		}
		pp.publish()
	}
	kept := harness.CountLog(n2, `"cluster: message for a disowned copy kept in the held subject" node=n2 clients=[`+id+`]`)
	named := harness.CountLog(n2, `its held subject named for the new owner" node=n2 client_id=`+id)
	if kept == 0 || named == 0 {
		t.Skipf("n2's disowned copy of %s kept nothing (%d) or n2 named no own place (%d): the test missed its path; n2:\n%s",
			id, kept, named, harness.GrepLog(n2, "client_id="+id))
	}
	t.Logf("n2's disowned copy kept %d messages before n2 was killed", kept)
	tc.Kill(n2, syscall.SIGKILL)
	tc.WaitLog(n3, `"session moved here" node=n3 client_id=`+id, 1, 60*time.Second)

	c := pp.resume(n3, id)
	pp.check(c, n2, n3)
	t.Logf("n3: %s", harness.GrepLog(n3, "a named place read for what a disowned copy kept", `read on from the previous owner's places for a session moved here" node=n3 client_id=`+id))
}
