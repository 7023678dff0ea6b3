package repro_test

import (
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestReproLateOpHeld: a node back from a silence (paused, cut off) gets
// what the others held for it meanwhile through its own follower of its
// held subject. Ops it made for a session before that follower applied
// them (forwards its copy took once the others heard it again) became the
// session's last op in the stream, and a claim that read the stream read
// every held subject from that op on, as if the node had applied what
// was held before it: everything held for the node during its silence
// was passed over, acknowledged and lost (test/jepsen TestClusterFull
// seed 57, session 21: 204 lost for ps3 on n1's claim back after a cut;
// seed 41, session 21: 29 for ps3 after a pause; bench/jepsen/RESULTS.md,
// "ps57" and "ps41"). Now such ops name where the follower stood
// (opHeldHeader), and the claim reads that node's subject from there.
//
// held-late makes n3's own follower apply each message 15 s after it was
// held. The subscriber's session is offline on n3; n3 is paused, n1
// publishes QoS 1 and 2 (held for n3); n3 is resumed, and n1's next
// messages are forwarded to n3's copy (ops made before the follower
// applied the held ones); n3 is paused again, and the client resumes on
// n2, whose claim n3 does not answer: n2 reads the stream. Every
// acknowledged message must reach it, a QoS 2 one once.
func TestReproLateOpHeld(t *testing.T) {
	t.Parallel() // see harness.Main
	const id = "lh-sub"
	cfg := filepath.Join(t.TempDir(), "roost.yaml")
	// No adoption of paused n3's sessions: the session moves by the
	// client's claim only. The subscriber reads nothing until it
	// resumes: its queue must take everything published meanwhile.
	harness.WriteAtomic(t, cfg, []byte("cluster:\n  adopt_after: 120s\nlimits:\n  max_queued: 100000\n"), 0o644)
	tc := harness.StartClusterFault(t, 3, "held-late=15s@n3", "--config", cfg)
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	sub, pub := harness.PersistentPair(t, n3, n1, "lh", 600)
	sub.Disconnect(&paho.Disconnect{})
	pp := &pacedPub{t: t, nd: n1, id: "lh-pub", prefix: "lh", pub: pub}

	paused := false
	pause := func(on bool) {
		sig := syscall.SIGCONT
		if on {
			sig = syscall.SIGSTOP
		}
		tc.Kill(n3, sig)
		paused = on
	}
	defer func() {
		if paused {
			pause(false) // the cluster's cleanup stops it
		}
	}()
	pause(true)
	harness.Eventually(t, harness.PartitionBound, func() error {
		if !harness.GoneFrom(n1, n3) {
			return fmt.Errorf("n1 has not dropped the paused n3 yet")
		}
		return nil
	})
	for start := time.Now(); len(pp.want) < 20; {
		if time.Since(start) > 60*time.Second {
			t.Fatalf("only %d messages acknowledged in 60 s with n3 paused", len(pp.want))
		}
		pp.publish()
	}
	held := harness.CountLog(n1, `holding a message for a dropped node's persistent sessions" node=n1 peer=n3`)
	pause(false)
	// Forwarded to n3's copy once n1 hears n3 again: the copy journals
	// them while its follower has applied none of the held ones.
	awaitKnown(t, pp, n1, n3)
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); {
		pp.publish()
	}
	pause(true)
	c := pp.resume(n2, id)
	fromStream := harness.CountLog(n2, `msg="session moved here" node=n2 client_id=`+id+` from="replicated record"`) > 0
	named := harness.CountLog(n2, `read for a session from where its node's follower stood at the session's last op" node=n2 client_id=`+id+` peer=n3`) > 0
	t.Logf("n1 held %d messages for n3; n2: %s", held, harness.GrepLog(n2, "client_id="+id, "cluster: a held subject read"))
	pp.check(c, n3, n2)
	if t.Failed() {
		return
	}
	if held == 0 {
		t.Skipf("n1 held nothing for paused n3: the test missed its path; n1:\n%s", harness.GrepLog(n1, "peer=n3"))
	}
	if !fromStream {
		t.Skipf("n2 did not take %s from the stream: the test missed its path; n2:\n%s", id, harness.GrepLog(n2, "client_id="+id))
	}
	if !named {
		t.Skipf("the session's last op did not name n3's follower's place: the test missed its path; n2:\n%s", harness.GrepLog(n2, "client_id="+id))
	}
}
