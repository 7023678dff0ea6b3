package repro_test

import (
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestReproWatchReplacedCopy: found by test/jepsen TestClusterFull (short
// faults, seed 414 on main b44475c: 5 acknowledged messages lost for
// share group g0). n2 kept five messages for its disowned copy of g0m0.
// A claim of g0m0 on n2, its client gone, took the session from the
// stream, its read ahead delivering the five kept copies into it, and
// lost the id to n3's claim before any op of that adoption was in the
// stream. The client's next claim on n2 read the same record, and its
// read ahead the same five, and delivered none: the origin watch still
// had them as the session's from the first adoption, whose copy the
// second replaced.
//
// Here wr-sub's session (plain, QoS 1) lives on n2, offline. A claim on
// n3 fences it there; n2 answers after n3's releaseTimeout (release-late,
// answer-late), and n3 reads the stream and waits (adopt-late); 10
// messages from n1 go to n2's fenced copy, kept. An abandoned CONNECT on
// n2 claims the session back from the stream with the kept copies; that
// adoption's ops stay out of the stream (adopt-ops-late). A second claim
// on n3 disowns it the same way, and the client resumes on n2, whose
// claim reads the stream again (frees the held ops). Every acknowledged
// message must reach it.
func TestReproWatchReplacedCopy(t *testing.T) {
	t.Parallel() // see harness.Main
	const id = "wr-sub"
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "release-late=" + id + "@n2,answer-late=" + id + "@n2,adopt-ops-late=" + id + "@n2,adopt-late=" + id + "@n3", Config: "cluster:\n  adopt_after: 120s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	expiry := uint32(harness.QueuedExpiry)
	sub := harness.NewPersistent(t, n2, id, paho.SubscribeOptions{Topic: "wr/#", QoS: 1})
	sub.Disconnect(&paho.Disconnect{})
	tc.WaitLog(n2, "client_id="+id+` reason="client disconnected normally"`, 1, harness.Wait)
	pub := harness.Connect(t, n1, "wr-pub")
	pub.AwaitInterest(t, "wr/t")

	// n3's claim fences n2's copy, reads the stream and waits.
	held := `test fault: adoption held until the client id is claimed again elsewhere" node=n3 client_id=` + id
	claimUntil(t, n3, id, expiry, 60*time.Second, func() bool { return harness.CountLog(n3, held) > 0 })
	tc.WaitLog(n2, `"session fenced: its client id is owned by another node (owner records)" node=n2 client_id=`+id, 1, 30*time.Second)
	want := harness.PublishOwed(t, n1, "wr-pub", &pub, "wr/t", "kept", 10)

	// n2 claims it back from the stream, its client gone, with the kept
	// copies; n3's next claim disowns that copy.
	adopted := `"session moved here" node=n2 client_id=` + id
	claimUntil(t, n2, id, expiry, 60*time.Second, func() bool { return harness.CountLog(n2, adopted) > 0 })
	claimUntil(t, n3, id, expiry, 60*time.Second, func() bool { return harness.CountLog(n3, held) > 1 })
	tc.WaitLog(n2, `"client taken over by another node" node=n2 client_id=`+id, 2, 30*time.Second)

	// Within adopt-ops-late's bound (30 s) and past it: a resume whose
	// own adoption armed the fault is refused until the bound frees
	// n2's ops.
	c := harness.Resume(t, n2, id, expiry, 60*time.Second)
	got, lost := harness.ReceiveAll(c, want, 15*time.Second)
	if len(lost) > 0 {
		t.Fatalf("%d of %d acknowledged messages never reached %s on n2: %v\ngot: %v\nn2:\n%s", len(lost), len(want), id, lost, got,
			harness.GrepLog(n2, "client_id="+id))
	}
	// The resume must have read the stream to free the first adoption's
	// ops; released by the fault's bound instead (adoptOpsLateMax), the
	// first adoption's ops stayed local (its copy disowned just before)
	// and the fault armed at the resume's own: a fresh clone's run
	// (session 26) refused every resume for a minute, "CONNACK 0x80".
	if harness.CountLog(n2, adopted) < 2 || harness.CountLog(n2, "test fault: a session op held from its partition stream until a later claim read the stream") == 0 ||
		harness.CountLog(n2, "adopt-ops-late's ops released at its bound") > 0 {
		t.Skipf("the test missed its path: n2 did not take %s from the stream twice with the first adoption's ops held\nn2:\n%s", id, harness.GrepLog(n2, "client_id="+id))
	}
}
