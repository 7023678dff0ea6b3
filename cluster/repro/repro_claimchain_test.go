package repro_test

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestReproClaimChainHeld: the loss of test/jepsen TestClusterFull's claim
// livelock (bench/jepsen/RESULTS.md, "cause C" while claims supersede one
// another: seed 41 ps2 439 lost, seed 42 ps0 165, groupwin's ps3 384).
// Under load a claim that takes a session from the stream outlasts its
// client's CONNACK bound; the client connects elsewhere, and that claim
// supersedes the first ("session taken from the stream not adopted: its
// client id was claimed again meanwhile"). While claims read, the session
// is in the stream only: no node announced its interest, and once the
// cover of its last owner ran out (a dead node's orphan interest, a
// fenced copy's hold keys) nothing was held for it either, so what was
// published then was acknowledged and reached nobody.
//
// Here cc-sub's session lives on n1, offline, with a message queued; n1 is
// paused (not held for: only silent) and its peers drop it. The client
// connects to n2, whose claim reads the session and the held subjects
// and then (adopt-late) waits until a newer claim asks it to let go.
// Meanwhile a publisher on n3 publishes to the session's filter. The
// client then connects to n3, which supersedes n2's claim and adopts the
// session: every acknowledged message must reach it.
func TestReproClaimChainHeld(t *testing.T) {
	t.Parallel() // see harness.Main
	const id = "cc-sub"
	// No janitor adoption of paused n1's sessions; room for the
	// elections after n1's pause.
	// held-late: n2's own follower applies what is held for n2 a second
	// after it was held, past the fresh session's QoS 2 flow of the
	// forwarded copy (under load it lags so; unloaded, it can come first
	// and find the copy still queued).
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "adopt-late=" + id + "@n2,held-late=1s@n2", Config: "cluster:\n  adopt_after: 300s\n  forward_timeout: 15s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	queuedOffline(t, tc, n1, n3, id, "cc/t")
	pub := harness.Connect(t, n3, id+"-pub2")

	tc.Kill(n1, syscall.SIGSTOP)
	harness.Eventually(t, 30*time.Second, func() error {
		if !harness.GoneFrom(n3, n1) || !harness.GoneFrom(n2, n1) {
			return fmt.Errorf("n2 and n3 have not dropped paused n1 yet")
		}
		return nil
	})
	// n2's claim: n1 does not answer, the session is read from the
	// stream, the held subjects ahead; then it waits for a newer claim.
	// (A claim may fail at first: the streams n1 led elect leaders. The
	// CONNECTs stay open: the client never sees a CONNACK.)
	held := `test fault: adoption held until the client id is claimed again elsewhere" node=n2 client_id=` + id
	claimUntil(t, n2, id, harness.QueuedExpiry, 120*time.Second, func() bool { return harness.CountLog(n2, held) > 0 })

	// A session new on n2 while n2's claim holds for cc/t (fresh): n3
	// forwards to n2 what fresh matches and holds it for n2 by the
	// claim's keys, and n2's follower applies the held copy to the
	// persistent sessions that were on n2 when it was held: fresh too,
	// which had it forwarded (and, QoS 2, completed) already. Each must
	// reach it once (seen in TestClusterFull: ps0, whose session had
	// been lost, new on a node with hold keys out, got 10 messages of
	// QoS 2 twice).
	fresh := harness.NewPersistent(t, n2, id+"-fresh", paho.SubscribeOptions{Topic: "cc/t", QoS: 2}, paho.SubscribeOptions{Topic: "cc/fresh", QoS: 1})
	pub.AwaitInterest(t, "cc/fresh") // n3 forwards cc/t to n2 for it too
	owedFresh := harness.PublishOwedQoS(t, n3, id+"-pub2", &pub, "cc/t", "fresh", 10, 2)

	want := harness.PublishOwed(t, n3, id+"-pub2", &pub, "cc/t", "chain", 10)
	back := harness.Resume(t, n3, id, harness.QueuedExpiry, 90*time.Second)
	tc.WaitLog(n2, `session taken from the stream not adopted: its client id was claimed again meanwhile" node=n2 client_id=`+id, 1, 30*time.Second)
	want = append(want, "queued")
	want = append(want, owedFresh...)
	if _, lost := harness.ReceiveAll(back, want, 30*time.Second); len(lost) > 0 {
		t.Fatalf("%d of %d acknowledged messages never reached %s: %v\nn2:\n%s\nn3:\n%s", len(lost), len(want), id, lost,
			harness.GrepLog(n2, id), harness.GrepLog(n3, id))
	}
	// By now n2's follower (every heldPoll) has read past the copies held
	// for n2 before the resume read them: a second copy would be in.
	got, lost := harness.ReceiveAll(fresh, owedFresh, 30*time.Second)
	harness.DrainInbox(fresh, func(p *paho.Publish) { got[string(p.Payload)]++ })
	if len(lost) > 0 {
		t.Errorf("%d of %d acknowledged messages never reached %s: %v", len(lost), len(owedFresh), fresh.ID, lost)
	}
	for _, p := range owedFresh {
		if got[p] > 1 {
			t.Errorf("%s got %s %d times at QoS 2\nn2:\n%s", fresh.ID, p, got[p], harness.GrepLog(n2, fresh.ID))
		}
	}
	t.Logf("%d acknowledged messages delivered; n2 kept holding for %s after its claim: %d line(s)", len(want), id,
		harness.CountLog(n2, "a claim ended without the session; its filters stay held for this node a while"))
}
