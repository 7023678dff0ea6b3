package repro_test

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestReproMovedBackHeldHere: a session that was on a node, went to another
// and moves back live must get what was published on the first node while
// it was away and held for the other. The first node watched the session
// (originWatch: a return from a silence, a fence or a claim there watches
// every session there) and counted every message published there since the
// watch began as delivered locally; the move back's reads of the old
// owner's held subject (its follower had not applied them: the handover
// names its place) brought them, and the watch dropped them as had: acked
// and lost (test/jepsen TestClusterFull long faults seed 615, session 26:
// ps3 n2 -> n1 -> n2 with n1 paused between, 29 messages published on n2).
//
// mb-sub's session is on n2 and the publisher too; n2 is paused past the
// heartbeat timeout and resumed (its return watches mb-sub); the session
// moves live to n3 and goes offline there; n3 is paused and the publisher
// on n2 sends QoS 1 and 2 (held for n3); n3 is resumed with its follower
// held back (held-late) and the client resumes on n2 at once, which takes
// the session from n3 live and reads n3's held subject from the place n3
// names. Every acknowledged message must reach it, a QoS 2 one once.
func TestReproMovedBackHeldHere(t *testing.T) {
	t.Parallel() // see harness.Main
	const id = "mb-sub"
	// No adoption of the paused nodes' sessions: the session moves by the
	// client's claims only (and the watch lasts past the test: heldWatch
	// counts adopt_after).
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "held-late=15s@n3", Config: "cluster:\n  adopt_after: 120s\nlimits:\n  max_queued: 100000\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	sub, pub := harness.PersistentPair(t, n2, n2, "mb", 600)
	sub.Disconnect(&paho.Disconnect{})
	pp := &pacedPub{t: t, nd: n2, id: "mb-pub", prefix: "mb", pub: pub}

	pause := func(nd *harness.Node) (resume func()) {
		tc.Kill(nd, syscall.SIGSTOP)
		resumed := false
		t.Cleanup(func() {
			if !resumed {
				tc.Kill(nd, syscall.SIGCONT) // the cluster's cleanup stops it
			}
		})
		harness.Eventually(t, harness.PartitionBound, func() error {
			if !harness.GoneFrom(n1, nd) {
				return fmt.Errorf("n1 has not dropped the paused %s yet", nd.Name)
			}
			return nil
		})
		return func() { tc.Kill(nd, syscall.SIGCONT); resumed = true }
	}
	const back = `back from a silence: persistent sessions catch up with what was held for this node"`
	pause(n2)()
	harness.Eventually(t, 60*time.Second, func() error {
		if harness.CountLog(n2, back) == 0 {
			return fmt.Errorf("n2 did not catch up as back from a silence")
		}
		return nil
	})
	joined := func() int { return harness.CountLog(n2, `msg="cluster node joined" node=n2 peer=n3`) }
	c := harness.Resume(t, n3, id, 600, 60*time.Second) // live from n2
	if err := c.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatalf("disconnect %s: %v", id, err)
	}
	tc.WaitLog(n3, "client_id="+id+` reason="client disconnected normally"`, 1, harness.Wait)

	before := joined()
	resume := pause(n3)
	// 20 messages, or what was acknowledged in 60 s: at load 100 the
	// publisher got 18 (huntb32, session 32), each a forward that waits
	// for n3's drop; the path check below says whether n2 held any.
	for start := time.Now(); len(pp.want) < 20 && time.Since(start) < 60*time.Second; {
		pp.publish()
	}
	if len(pp.want) == 0 {
		resume()
		t.Skipf("no message acknowledged in 60 s with n3 paused: the test missed its path")
	}
	held := harness.CountLog(n2, `holding a message for a dropped node's persistent sessions" node=n2 peer=n3`)
	resume()
	// n2's claim asks n3 only once it hears from it again.
	for start := time.Now(); joined() <= before; pp.publish() {
		if time.Since(start) > 30*time.Second {
			t.Fatalf("n2 did not hear from n3 again within 30 s; n2:\n%s", harness.GrepLog(n2, "peer=n3"))
		}
	}
	c = pp.resume(n2, id)
	t.Logf("n2 held %d messages for n3; n3: %s", held, harness.GrepLog(n3, "named for the new owner"))
	pp.check(c, n3, n2)
	if t.Failed() {
		return
	}
	named := harness.CountLog(n2, `held subjects read on from the previous owner's places for a session moved here" node=n2 client_id=`+id)
	if held == 0 {
		t.Skipf("n2 held nothing for paused n3: the test missed its path; n2:\n%s", harness.GrepLog(n2, "peer=n3"))
	}
	if named == 0 {
		t.Skipf("n2 did not take %s live reading n3's held subject from a named place: the test missed its path; n2:\n%s", id, harness.GrepLog(n2, "client_id="+id))
	}
}
