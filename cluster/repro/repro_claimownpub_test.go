package repro_test

import (
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestReproClaimOwnPublish: a publish on the node whose claim reads a
// share group's only member from the stream (test/jepsen TestClusterFull
// seed 194, session 23: 12 acknowledged g0 messages published on n2 at
// 36.77-37.15 while g0's two members were claims waiting on n2 itself;
// bench/jepsen/RESULTS.md "loss194" cause (2) and "own194"). The claim
// puts the session's filters out as hold keys of its node (claimhold.go):
// the other nodes hold for it what they match, but the node itself held
// its own publishes only for plain filters (persistentFilters.holds), so
// with no other node holding for the group (no live member anywhere, no
// other node's keys) a publish there reached no member, was held for
// nobody, and was acknowledged.
//
// Here om-m0, the group's only member, lives on n3, offline. n3 is
// killed; the client connects to n2, whose claim reads the session and
// waits (adopt-late); n3 comes back and drops its restored copy (owned
// by n2 now), n2 is killed in its wait and started again without the
// session, and n3's cover for the dropped copy runs out (probes on n1
// are no longer held for n2 or n3). Then the client connects to n1: n2,
// which never had the session, sends n1 to the stream; n1's claim holds
// for the session and waits before its adoption (adopt-wait), while a
// paced publisher on n1 itself sends QoS 1 and 2 messages to the group.
// Every acknowledged message must reach om-m0 after the adoption, a QoS 2
// one once.
func TestReproClaimOwnPublish(t *testing.T) {
	t.Parallel() // see harness.Main
	const (
		prefix = "om"
		id     = prefix + "-m0"
	)
	// No survivor adopts the killed nodes' sessions: om-m0 is taken by
	// its client's claims only.
	// left-unadopted: n2, restarted with its record and without the
	// session, would adopt it at its start (adoptLeftHere) and hand it
	// over live; the fault keeps the seconds before that scan open.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "adopt-late=" + id + "@n2,adopt-wait=" + id + "@n1,left-unadopted=" + id + "@n2", Config: "cluster:\n  adopt_after: 300s\n  forward_timeout: 5s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	m0 := harness.NewPersistent(t, n3, id, paho.SubscribeOptions{Topic: "$share/" + prefix + "g/" + prefix + "/#", QoS: 2})
	if err := m0.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatalf("disconnect %s: %v", id, err)
	}
	tc.WaitLog(n3, "client_id="+id+` reason="client disconnected normally"`, 1, harness.Wait)
	pub := harness.Connect(t, n1, prefix+"-pub")
	pub.AwaitInterest(t, prefix+"/t")

	restartWithout(t, tc, n3, n2, id)
	// Until neither n2 (dead, its claim's keys its orphan interest) nor
	// n3 (its dropped copy's keys, for cover) is held for: from then on
	// n1's claim is the only one to hold for the group.
	awaitUnheld(t, n1, &pub, prefix, n2, n3)

	const claimHeld = `"cluster: a session read from the stream by a claim held for this node until it is adopted" node=n1 client_id=` + id
	claimUntil(t, n1, id, harness.QueuedExpiry, 60*time.Second, func() bool { return harness.CountLog(n1, claimHeld) > 0 })
	const adopted = `msg="session moved here" node=n1 client_id=` + id
	var after time.Time // when the adoption was logged
	bound := time.Now().Add(60 * time.Second)
	acked, unknown := harness.PublishPaced(t, n1, &pub, prefix+"-pub", prefix+"/t", func(int) bool {
		if after.IsZero() && harness.CountLog(n1, adopted) > 0 {
			after = time.Now()
		}
		return time.Now().Before(bound) && (after.IsZero() || time.Since(after) <= 300*time.Millisecond)
	})
	if harness.CountLog(n1, adopted) == 0 {
		t.Fatalf("n1 did not adopt %s within 60 s of its claim's read:\n%s", id, harness.GrepLog(n1, "client_id="+id))
	}
	t.Logf("%d messages acknowledged on n1 during its claim, %d with unknown outcome; n1 held %d for itself", len(acked), unknown,
		harness.CountLog(n1, "node=n1 peer=n1 topic="+prefix+"/t"))

	back := harness.Resume(t, n1, id, harness.QueuedExpiry, 60*time.Second)
	got, lost := harness.ReceiveAll(back, acked, 30*time.Second)
	harness.DrainInbox(back, func(p *paho.Publish) { got[string(p.Payload)]++ })
	if len(lost) > 0 {
		t.Errorf("%d of %d acknowledged messages published on n1 during its claim never reached %s: %v\nn1:\n%s", len(lost), len(acked), id,
			lost[:min(len(lost), 20)], harness.GrepLog(n1, "client_id="+id))
	}
	harness.CheckQoS2Once(t, got)
}
