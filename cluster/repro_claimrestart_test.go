package cluster_test

import (
	"syscall"
	"testing"
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
	tc := startCluster(t, 3)
	n1, n2, n3 := tc.nodes[0], tc.nodes[1], tc.nodes[2]
	const id = "restart-sub"
	queuedOffline(t, tc, n1, n2, id, "restart/t")

	tc.kill(n1, syscall.SIGSTOP)
	resumed := false
	defer func() {
		if !resumed {
			tc.kill(n1, syscall.SIGCONT)
		}
	}()
	claimOn(t, tc, n3, id, queuedExpiry)
	tc.kill(n3, syscall.SIGKILL)
	tc.kill(n1, syscall.SIGCONT)
	resumed = true
	tc.start(n3)
	resumeQueued(t, n2, id, "claimed on n2 from restarted n3", n2, n3)
}
