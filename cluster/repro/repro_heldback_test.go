package repro_test

import (
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestReproHeldBackClaim: a session claimed back onto the node whose
// disowned copy kept messages gets what that copy kept (test/jepsen
// TestClusterFull seed 44 with long faults, ps2: 10 acknowledged messages
// lost; bench/jepsen/RESULTS.md, "Silent nodes held for, and long
// faults"). ps2 was on n2; n3 claimed it and n2 handed it over live, its
// copy disowned and keeping what it took in n2's held subject (keep.go);
// before n3's move finished, the client claimed the id back on n2. n2
// declined the finish (claimed here again), n3 took the session from the
// stream and handed it over live to n2, and n2 adopted that in place of
// its copy: what the copy kept reached nobody.
//
// Here hb-sub's session is on n2, offline, and a publisher on n2 sends
// QoS 1 and 2 messages throughout (a publish on the old owner reaches its
// copy until the move's finish, so the window is wide). A CONNECT on n3
// claims the id; n3's move asks n2 to finish only once a newer claim asked
// n3 to let go (finish-asked); the client then resumes on n2. Every
// acknowledged message must reach the session there, a QoS 2 one once.
func TestReproHeldBackClaim(t *testing.T) {
	t.Parallel() // see harness.Main
	const id = "hb-sub"
	// No adoption by the janitor: the session moves by the client's
	// claims only.
	// A queue that takes everything published meanwhile: how much that
	// is depends on how long the fault's waits last on a loaded machine
	// (1,389 messages once, past the default limit: dropped queue_full).
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "finish-asked=" + id + "@n3", Config: "cluster:\n  adopt_after: 60s\n  forward_timeout: 15s\nlimits:\n  max_queued: 100000\n"})
	n2, n3 := tc.Nodes[1], tc.Nodes[2]
	sub, pub := harness.PersistentPair(t, n2, n2, "hb", harness.QueuedExpiry)
	sub.Disconnect(&paho.Disconnect{}) // the session stays on n2, offline
	tc.WaitLog(n2, "client_id="+id+` reason="client disconnected normally"`, 1, harness.Wait)
	pp := &pacedPub{t: t, nd: n2, id: "hb-pub", prefix: "hb", pub: pub}
	for range 10 {
		pp.publish()
	}

	// n3 claims the id; n2 hands the session over live, its copy
	// disowned, and n3's move waits before its finish.
	pp.claimUntilWaits(tc, n3, id, "for a newer claim")
	// Into the window: n2's publishes reach its disowned copy only.
	for range 25 {
		pp.publish()
	}

	// The client claims the id back on n2.
	c := pp.resume(n2, id)
	pp.check(c, n3, n2)
	if harness.CountLog(n3, `"cluster: moving session: the previous owner did not finish; taking what it handed over first" node=n3 client_id=`+id) == 0 {
		t.Errorf("n2 finished n3's move: the test missed the claim back it is about; n3:\n%s", harness.GrepLog(n3, "client_id="+id))
	}
	keptOn(t, n2, id)
}

// TestReproHeldBackGone: a live move whose old owner is gone before the
// move's finish gets what the old owner's disowned copy kept meanwhile.
// The new owner took the session from the stream (or from what was
// handed over first) and read no held subject: what the copy took between
// its disown and its node's end was kept in that node's held subject for
// the session, and nobody read it there.
//
// Here hb2-sub's session is on n2, offline, and a publisher on n1 sends
// QoS 1 and 2 messages throughout. n1 sees n3's interest late
// (interest-late), so its barrier for n3's move comes late and its
// messages reach n2's disowned copy meanwhile, kept there. n3's move asks
// n2 to finish only once n2 is gone (finish-gone), and n2 is killed. The
// client resumes on n3: every acknowledged message must reach it, a QoS 2
// one once.
func TestReproHeldBackGone(t *testing.T) {
	t.Parallel() // see harness.Main
	const id = "hb2-sub"
	// No adoption by the janitor: the session moves by the client's
	// claims only; room for the elections after n2's kill.
	// A queue that takes everything published meanwhile: how much that
	// is depends on how long the fault's waits last on a loaded machine
	// (1,389 messages once, past the default limit: dropped queue_full).
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "finish-gone=" + id + "@n3,interest-late=n3@n1", Config: "cluster:\n  adopt_after: 60s\n  forward_timeout: 15s\nlimits:\n  max_queued: 100000\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	sub, pub := harness.PersistentPair(t, n2, n1, "hb2", harness.QueuedExpiry)
	sub.Disconnect(&paho.Disconnect{}) // the session stays on n2, offline
	tc.WaitLog(n2, "client_id="+id+` reason="client disconnected normally"`, 1, harness.Wait)
	pp := &pacedPub{t: t, nd: n1, id: "hb2-pub", prefix: "hb2", pub: pub}
	for range 10 {
		pp.publish()
	}

	// n3 claims the id; n2 hands the session over live, its copy
	// disowned, and n1's messages reach that copy until n1's barrier.
	pp.claimUntilWaits(tc, n3, id, "until the previous owner is gone")
	kept := harness.CountLog(n2, `"cluster: message for a disowned copy kept in the held subject" node=n2 clients=[`+id+`]`)
	if kept == 0 {
		t.Fatalf("n2's disowned copy of %s kept nothing: the test missed the window it is about; n2:\n%s", id, harness.GrepLog(n2, "client_id="+id))
	}
	t.Logf("n2's disowned copy kept %d messages before n2 was killed", kept)
	tc.Kill(n2, syscall.SIGKILL)
	tc.WaitLog(n3, `"session moved here" node=n3 client_id=`+id, 1, 60*time.Second)

	c := pp.resume(n3, id)
	pp.check(c, n2, n3)
}
