package repro_test

import (
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestReproKeptNamedClaimBack: TestReproGroupKeptLocal's path with the
// old owner's own held subject named at its live handover (withOwnBehind;
// name-own-always here, as a restored session handed over lately after
// its settle or a node that was away names it). A named place of a
// node's own subject skips what is kept there for a disowned copy
// (heldPos.copyHas: the copy that moved had it). But n3's move never
// finishes: n2 claims the session back first, and n3 hands back only
// what n2 handed it at its answer, naming n2's place. Every group message
// n2's disowned copy kept after that answer was in no copy that moved,
// and the move back's read of n2's subject from the named place skipped
// them (session 23, loss187's change reverted for this: 204-218 of 264
// acknowledged messages lost in TestReproGroupKeptLocal;
// bench/jepsen/RESULTS.md "k187").
//
// kn-sub, the group's only member, is offline on n2; n2 is killed and
// restarted (its follower of its own subject has a place to name). A
// CONNECT on n3 claims the id; n2 hands the session over live, naming
// its own subject, and n3's move waits before its finish (finish-asked)
// while n2's publisher sends QoS 1 and 2, kept for the disowned copy. n3
// reads no held subject for the session (held-stall). The client
// resumes on n2, which claims it back; n3 moves it back live. Every
// acknowledged message must reach the member, QoS 2 once. Under load the
// claim back took the stream instead, twice in eight runs (session 24),
// through two gaps that have tests of their own now
// (repro_keptclaimback_test.go).
func TestReproKeptNamedClaimBack(t *testing.T) {
	t.Parallel() // see harness.Main
	const id, prefix = "kn-sub", "kn"
	// No adoption by the janitor: the session moves by the client's
	// claims only. A queue that takes everything published meanwhile.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "finish-asked=" + id + "@n3,held-stall=" + id + "@n3,name-own-always=" + id + "@n2", Config: "cluster:\n  adopt_after: 60s\n  forward_timeout: 15s\nlimits:\n  max_queued: 100000\n"})
	n2, n3 := tc.Nodes[1], tc.Nodes[2]
	sub := harness.NewPersistent(t, n2, id, paho.SubscribeOptions{Topic: "$share/kn/" + prefix + "/q1", QoS: 1},
		paho.SubscribeOptions{Topic: "$share/kn/" + prefix + "/q2", QoS: 2})
	if err := sub.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatalf("disconnect %s from n2: %v", id, err)
	}
	tc.WaitLog(n2, "client_id="+id+` reason="client disconnected normally"`, 1, harness.Wait)

	tc.Kill(n2, syscall.SIGKILL)
	tc.Start(n2)
	tc.WaitLog(n2, "cluster: restored sessions settled", 1, 60*time.Second)
	var pub *harness.Client
	harness.Eventually(t, time.Minute, func() error { return harness.Redial(t, n2, prefix+"-pub", &pub) })
	pub.AwaitInterest(t, prefix+"/q1")
	pub.AwaitInterest(t, prefix+"/q2")
	pp := &pacedPub{t: t, nd: n2, id: prefix + "-pub", prefix: prefix, pub: pub}

	pp.claimUntilWaits(tc, n3, id, "for a newer claim")
	// Into the window: kept for the disowned copy on n2, after its answer.
	for range 25 {
		pp.publish()
	}

	c := pp.resume(n2, id)
	pp.check(c, n3, n2)
	const kept = `"cluster: message for a disowned copy kept in the held subject" node=n2 clients=[` + id + `]`
	named := harness.CountLog(n2, `its held subject named for the new owner" node=n2 client_id=`+id)
	back := harness.CountLog(n2, `"session moved here" node=n2 client_id=`+id+` from=n3`)
	if harness.CountLog(n2, kept) == 0 || named == 0 || back == 0 {
		t.Skipf("n2 kept nothing for %s's disowned copy (%d), named no own place (%d), or the session did not come back from n3 live (%d): the test missed its path; n2:\n%s",
			id, harness.CountLog(n2, kept), named, back, harness.GrepLog(n2, "client_id="+id))
	}
	const uncarried = "a named place read for what a disowned copy kept"
	t.Logf("n2 kept %d messages for %s's disowned copy; the moves: n3:\n%s\nn2:\n%s", harness.CountLog(n2, kept), id,
		harness.GrepLog(n3, `read on from the previous owner's places for a session moved here" node=n3 client_id=`+id, uncarried),
		harness.GrepLog(n2, `read on from the previous owner's places for a session moved here" node=n2 client_id=`+id, uncarried))
}

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
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "finish-gone=" + id + "@n3,interest-late=n3@n1,name-own-always=" + id + "@n2", Config: "cluster:\n  adopt_after: 60s\n  forward_timeout: 15s\nlimits:\n  max_queued: 100000\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	sub, pub := harness.PersistentPair(t, n2, n1, "kg", harness.QueuedExpiry)
	sub.Disconnect(&paho.Disconnect{}) // the session stays on n2, offline
	tc.WaitLog(n2, "client_id="+id+` reason="client disconnected normally"`, 1, harness.Wait)
	pp := &pacedPub{t: t, nd: n1, id: "kg-pub", prefix: "kg", pub: pub}
	for range 10 {
		pp.publish()
	}

	pp.claimUntilWaits(tc, n3, id, "until the previous owner is gone")
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
