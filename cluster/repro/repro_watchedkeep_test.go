package repro_test

import (
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// A disowned copy that was watched (issue 17, test/jepsen TestClusterFull
// seed 49, ps3: 25 acknowledged messages lost). ps3's session was on n1,
// under an origin watch (originWatch) from before: n1's watches last
// heldWatch (tens of seconds) and start for every persistent session on
// the node at a restart's settle, a fence's end, a claim's hold keys, a
// live arrival under hold keys. n2 claimed ps3 and was killed; n1 fenced
// its copy, which took n3's forwards of pub0's messages and kept them in
// n1's held subject (keep.go). The watch noted their origins for the
// session as they went to the copy. The client came back to n1, whose
// claim took the session from the stream in place of the copy and read
// the kept copies ahead ("delivered=320"), but the watch said the session
// had them already: every kept copy of a forward was dropped (those of
// messages published on n1 itself were not: a local message is not noted
// by origin). What the replaced copy took counts as the session's only
// through its kept copies.
//
// Here the watch comes from a restart: n2, restarted, settles fww-sub's
// restored session and watches it (onSettled). Then n3 claims the
// session and is killed before it asks n2 to let go (delay-release), n2
// fences its copy, a publisher on n1 sends QoS 1 and 2 messages into the
// window (forwarded to the copy, kept), and the client resumes on n2,
// whose claim takes the session from the stream. Every acknowledged
// message must reach it, in order, a QoS 2 one once (before the fix:
// 784 of 800 lost, each kept copy of a forward).
func TestReproFenceWindowWatched(t *testing.T) {
	t.Parallel() // see harness.Main
	const id = "fww-sub"
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "delay-release=" + id + "@n3", Config: "cluster:\n  adopt_after: 60s\n  forward_timeout: 15s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	sub, pub := harness.PersistentPair(t, n2, n1, "fww", harness.QueuedExpiry)
	sub.Disconnect(&paho.Disconnect{}) // the session stays on n2, offline
	tc.WaitLog(n2, "client_id="+id+` reason="client disconnected normally"`, 1, harness.Wait)

	// Restarted, n2 watches the sessions it settles for heldWatch
	// (onSettled): fw-sub's copy is watched through the window below.
	tc.Kill(n2, syscall.SIGKILL)
	tc.Start(n2)
	tc.WaitLog(n2, "restored sessions settled", 1, 60*time.Second)
	pub.AwaitInterest(t, "fww/q1")
	pub.AwaitInterest(t, "fww/q2")

	// n3 claims the session and is killed before it asks n2 to let go
	// (delay-release), as seed 49's n2 was: n2 fences its copy.
	claimOn(t, tc, n3, id, harness.QueuedExpiry)
	tc.Kill(n3, syscall.SIGKILL)
	tc.WaitLog(n2, `(owner records)" node=n2 client_id=`+id, 1, 60*time.Second)
	orderAcrossResume(t, n1, &pub, "fww-pub", n2, id, harness.QueuedExpiry, nil)
	keptOn(t, n2, id)
}
