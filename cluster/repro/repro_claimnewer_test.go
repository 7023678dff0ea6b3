package repro_test

import (
	"testing"
	"time"

	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestReproClaimAnsweredNewer: found by test/jepsen TestClusterFull (30
// minutes, seed 42): ps0 lost its subscription, and with it 23,022
// acknowledged messages over the last 21 minutes. n1, resumed from a
// pause, claimed ps0 from n3 (epoch 172) with a CONNECT the client had
// long given up on; meanwhile n3 began a claim of its own for the
// client's next CONNECT there (epoch 173, noted before its write). n1's
// release request found n3's newer epoch and was answered "nothing to
// hand over": n1, which still held its unread mark (n3's request had not
// reached it yet), adopted nothing and started the client afresh, Session
// Present 0. n3's claim then took that empty session from n1 in place of
// its own copy: every later CONNECT resumed a session without
// subscriptions.
//
// Here nr-sub's session lives on n1, offline, with a message queued. Both
// n2 and n1 hold their release requests for nr-sub (delay-release): n2
// claims first (epoch e+1) and waits; n1 claims while it waits (e+2) and
// waits too, so n2's request reaches n1 after n1 noted e+2 and before n1's
// reaches n2. n2's claim must not start the client afresh, and the
// session with its queued message must survive.
func TestReproClaimAnsweredNewer(t *testing.T) {
	t.Parallel() // see harness.Main
	const id = "nr-sub"
	// The claims' bound (forward_timeout) must outlast the held
	// requests (releaseDelay).
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "delay-release=" + id + "@n1,delay-release=" + id + "@n2", Config: "cluster:\n  forward_timeout: 15s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	queuedOffline(t, tc, n1, n3, id, "nr/t")

	claimOn(t, tc, n2, id, harness.QueuedExpiry) // n2 wrote e+1, its request held
	asked := time.Now()
	claimOn(t, tc, n1, id, harness.QueuedExpiry) // n1 wrote e+2, its request held
	if took := time.Since(asked); took >= 5*time.Second {
		// n2's request (held releaseDelay) may have reached n1 before
		// n1 noted its newer epoch: the path is missed, and the test
		// checks only that the session survived.
		t.Logf("n1's claim took %v after n2's: n2's request may have come first", took)
	}
	// n2's held request reaches n1 first. Its claim must give up (the
	// CONNECT closed without a CONNACK), not adopt nothing.
	deadline := time.Now().Add(60 * time.Second)
	afresh := func() int {
		return harness.CountLogAll(n2, `"client connected"`, "client_id="+id+" ", "session_present=false")
	}
	for harness.CountLogAll(n2, `"cluster: claim superseded`, "client_id="+id+" ") == 0 && harness.CountLogAll(n2, `"client connected"`, "client_id="+id+" ") == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("n2's claim neither gave up nor connected its client within 60 s; n2:\n%s", harness.GrepLog(n2, id))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if afresh() > 0 {
		t.Errorf("n2 connected %s afresh (Session Present 0) for a claim a newer one superseded; n2:\n%s\nn1:\n%s", id, harness.GrepLog(n2, id), harness.GrepLog(n1, id))
	}
	// n1's claim goes on and takes the session: from the stream, not
	// an empty one from n2.
	tc.WaitLog(n1, `"session moved here" node=n1 client_id=`+id, 1, 60*time.Second)
	resumeQueued(t, n3, id, "resumed on n3 after the superseded claim", n1, n2, n3)
}
