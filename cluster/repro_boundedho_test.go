package cluster_test

import (
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// TestReproBoundedHandover: a node that hands a session over before what
// was held for it was applied there (awaitHeld gave up at its bound) says
// so, and the new owner reads the held messages itself. Before, the answer
// was a plain handover, the new owner did not read the held subjects and
// the old one's followers applied what they read to no session
// (test/jepsen TestClusterFull: "session handed over before its held
// messages were applied" 2-7 times a run; seed 42 lost ps0's two QoS 2
// messages at 13.8 s). The held-pending fault gives hb-s, taken from the
// stream on n2, nothing held there and keeps its hand-over wait pending.
// Not parallel: the fault is in the nodes' environment, and n3 is killed.
func TestReproBoundedHandover(t *testing.T) {
	const id = "hb-s"
	t.Setenv("ROOST_TEST_FAULT", "held-pending="+id+"@n2")
	// A long adopt_after: no janitor adopts the dead n3's sessions.
	cfg := filepath.Join(t.TempDir(), "roost.yaml")
	writeAtomic(t, cfg, []byte("cluster:\n  adopt_after: 60s\n"), 0o644)
	tc := startClusterWith(t, 3, "--config", cfg)
	n1, n2, n3 := tc.nodes[0], tc.nodes[1], tc.nodes[2]
	const expiry = 300
	sub := originSub(t, n3, id, "hb/#")
	awaitOriginProbes(t, n1, "hb/probe", sub)
	pub := connect(t, n1, "hb-pub")

	// n3 dies; m1 is held for its sessions.
	tc.kill(n3, syscall.SIGKILL)
	eventually(t, 30*time.Second, func() error {
		if rc, closed := pub.tryPublish(t, &paho.Publish{Topic: "hb/x", QoS: 2, Payload: []byte("m1")}); closed {
			return redial(t, n1, "hb-pub", &pub)
		} else if rc != 0 {
			return fmt.Errorf("PUBREC 0x%02X", rc)
		}
		return nil
	})

	// hb-s comes to n2 from the stream; m1 is not applied there (the
	// fault: its held reads not done yet).
	a := resume(t, n2, id, expiry, 60*time.Second)
	if countLog(n2, `"session moved here" node=n2 client_id=`+id+` from="replicated record"`) == 0 {
		t.Fatalf("n2 did not read %s from the stream: the test did not take its path; n2:\n%s", id, grepLog(n2, id))
	}
	tc.waitLog(n2, `"cluster: test fault: nothing held is applied to the session taken from the stream" node=n2 client_id=`+id, 1, 10*time.Second)
	a.Disconnect(&paho.Disconnect{})

	// The client comes to n1: n2 hands the session over at its bound,
	// in time for n1's claim, and m1 must follow.
	b := resume(t, n1, id, expiry, 60*time.Second)
	if countLog(n2, `"cluster: session handed over before its held messages were applied" node=n2 client_id=`+id) == 0 {
		t.Fatalf("n2 did not give up its held wait: the test did not take its path; n2:\n%s", grepLog(n2, id))
	}
	if countLog(n1, `"session moved here" node=n1 client_id=`+id+` from="replicated record"`) > 0 {
		t.Fatalf("n1 read %s from the stream, not from n2's handover: the test did not take its path; n1:\n%s", id, grepLog(n1, id))
	}
	nextPayload(t, b, "m1")
	b.none(t, 2*time.Second)
}
