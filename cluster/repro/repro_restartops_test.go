package repro_test

import (
	"testing"
	"time"

	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestReproRestartedOpsBeforeHeld: a restarted node whose follower of its
// own held subject has not reached its consumer (nothing held for the
// node since its kill applied by this process) journals ops of its
// restored, unsettled copy made now: a message published on it to the
// session. A claim elsewhere then read the stream, whose last op was
// that one, the unsettled node answered "nothing applied here" (0), and
// the claimer read the held subjects from that op's time on, passing over
// everything held for the node while it was dead (test/jepsen
// TestClusterFull seed 41, session 22: ps0 19 and ps2 38 lost; bench/jepsen
// RESULTS.md, ps41b). The fault own-held-unreached keeps n1's follower
// from its consumer while the session is on n1, as its consumer's
// creation timed out in the run.
func TestReproRestartedOpsBeforeHeld(t *testing.T) {
	t.Parallel() // see harness.Main
	const id = "rh-sub"
	tc, pp := restartWithFault(t, "rh", "own-held-unreached="+id+"@n1", "cluster: owners of restored sessions read")
	n1 := tc.Nodes[0]
	// Published on n1 after its restart: its restored copy journals the
	// ops, made now, in the session's stream.
	local := harness.Connect(t, n1, "rh-local")
	pp.want = append(pp.want, harness.PublishOwed(t, n1, "rh-local", &local, "rh/q1", "local", 3)...)
	for start := time.Now(); harness.CountLog(n1, "test fault: own-held-unreached") == 0; {
		if time.Since(start) > 30*time.Second {
			t.Fatalf("n1's own held follower never tried its consumer; n1:\n%s", harness.GrepLog(n1, "cluster:"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	c := pp.resume(tc.Nodes[2], id)
	pp.check(c, n1, tc.Nodes[2])
	if t.Failed() {
		return
	}
	if harness.CountLog(n1, "restored session claimed elsewhere before it was settled here; dropped") == 0 {
		t.Skipf("n1 did not give up its unsettled copy of %s: the test missed its path; n1:\n%s", id, harness.GrepLog(n1, "client_id="+id, "cluster:"))
	}
	// The fix's path: n1's restored copy's ops counted from its last
	// heartbeat before the kill (lastbeat.go).
	if harness.CountLog(n1, "restored sessions' ops count from the last heartbeat before the restart") == 0 {
		t.Errorf("n1 did not date its restored sessions' ops from its last heartbeat; n1:\n%s", harness.GrepLog(n1, "cluster:"))
	}
}
