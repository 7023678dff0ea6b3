package repro_test

import (
	"syscall"
	"testing"

	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestReproClaimAfterRestart: found by test/jepsen TestClusterFull (seed
// 41, after TestReproClaimDuringTakeover's fix), where a shared group's
// persistent member got Session Present 0. A session lives on n1, offline,
// with a message queued; n1 is paused. The client connects to n3: n3
// records itself as the owner and waits for n1 to let go, and is killed
// (kill -9) before it has the session; it starts again with no session
// for the id in its own store, while the record names it. The client then
// connects to n2, which asks n3 to let go: n3 answered "nothing to hand
// over", and n2 started the client afresh on a session the cluster had.
// A node asked to let go of an id it holds no session for and did not
// claim since it started must send the claimer to the stream.
func TestReproClaimAfterRestart(t *testing.T) {
	t.Parallel() // see harness.Main
	tc := harness.StartCluster(t, 3)
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	const id = "restart-sub"
	queuedOffline(t, tc, n1, n2, id, "restart/t")

	tc.Kill(n1, syscall.SIGSTOP)
	resumed := false
	defer func() {
		if !resumed {
			tc.Kill(n1, syscall.SIGCONT)
		}
	}()
	claimOn(t, tc, n3, id, harness.QueuedExpiry)
	tc.Kill(n3, syscall.SIGKILL)
	tc.Kill(n1, syscall.SIGCONT)
	resumed = true
	tc.Start(n3)
	resumeQueued(t, n2, id, "claimed on n2 from restarted n3", n2, n3)
}

// TestReproReleaseAfterFence: found by test/jepsen TestCluster seed 302
// (30 minutes, a persistent publisher), where the publisher's session was
// lost. A persistent session lives on n1, offline, with a message queued.
// The client connects to n2, whose release request to n1 is slow (a test
// fault holds it past fenceGrace, as a slow route or a loaded node
// would): n1's owner watcher sees n2's record first, fences the session
// and, after the grace, ends it here; the request then found no session,
// and n1 answered "nothing to hand over": n2 started the client afresh on
// a session the cluster had (Session Present 0, the queued message gone).
// A node that ended a replicated session because its record names another
// node must send that node's late request to the stream.
func TestReproReleaseAfterFence(t *testing.T) {
	t.Parallel() // see harness.Main
	const id = "fenced-sub"
	// Room for the held-up request (5 s) and the stream read after it.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "delay-release=" + id + "@n2", Config: "cluster:\n  forward_timeout: 15s\n"})
	n1, n2 := tc.Nodes[0], tc.Nodes[1]
	queuedOffline(t, tc, n1, n2, id, "fenced/t")
	resumeQueued(t, n2, id, "resumed on n2 after n1 fenced and ended the session", n1, n2)
	if c := harness.CountLog(n1, "session ended: its client id is owned by another node\" client_id="+id); c == 0 {
		t.Errorf("n1 never ended the fenced session (the fault did not hold the request up?); n1:\n%s", harness.GrepLog(n1, id))
	}
}
