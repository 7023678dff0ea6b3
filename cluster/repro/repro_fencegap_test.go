package repro_test

import (
	"syscall"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestReproFenceGap: cause C of test/jepsen TestClusterFull in its fence
// form (seed 42: ps1, 136 acknowledged messages lost in 6 s). n3 claimed
// a session that lived on n2 and did not get to read it (paused, then
// killed); n2 saw n3's record, fenced the session and, with no release
// request after fenceGrace, ended it here without a handover. Until a
// later claim read the session from the stream, no node announced its
// interest: n2's copy had ended, n3 never had one, and n2 was alive, so
// nothing was held for it. A fenced node keeps the session's filters as
// hold keys a while (persistent.go fenceKeepHeld): the others hold what
// they match for it, and the claimer reads that with the session.
//
// Here fc-sub's session lives on n2, offline, with a message queued. The
// client connects to n3, whose release request waits (delay-release) while
// n3 is paused: n2 fences and ends the session. n3 is killed, n1 takes
// publishes for fc-sub's filter, and the client then resumes on n1: it
// must get the queued message and every message acknowledged since.
func TestReproFenceGap(t *testing.T) {
	t.Parallel() // see harness.Main
	const id = "fc-sub"
	// No janitor adoption of n3's sessions meanwhile (it has none of
	// fc-sub's anyway); room for the elections after n3's kill.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "delay-release=" + id + "@n3", Config: "cluster:\n  adopt_after: 120s\n  forward_timeout: 15s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	queuedOffline(t, tc, n2, n1, id, "fc/t")
	pub := harness.Connect(t, n1, id+"-pub2")

	claimOn(t, tc, n3, id, harness.QueuedExpiry)
	tc.Kill(n3, syscall.SIGSTOP)
	tc.WaitLog(n2, `"session ended: its client id is owned by another node" client_id=`+id, 1, 60*time.Second)
	tc.Kill(n3, syscall.SIGKILL)

	want := harness.PublishOwed(t, n1, id+"-pub2", &pub, "fc/t", "gap", 10)
	back := harness.Resume(t, n1, id, harness.QueuedExpiry, 60*time.Second)
	want = append(want, "queued")
	if _, lost := harness.ReceiveAll(back, want, 30*time.Second); len(lost) > 0 {
		t.Fatalf("%d of %d acknowledged messages never reached %s: %v\nn1:\n%s\nn2:\n%s", len(lost), len(want), id, lost,
			harness.GrepLog(n1, id), harness.GrepLog(n2, id))
	}
}
