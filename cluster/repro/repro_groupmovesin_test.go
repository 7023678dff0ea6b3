package repro_test

import (
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"slices"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// TestReproGroupPublishDuringMovesIn: a share group's message published
// on a node while two of the group's members move in live, with no
// member there yet, reaches one of them. The node serves a group with
// members here itself (local members first); the broker finds none in
// the server before the moves' adoptions, and a moving session holds the
// message for the group only when it is the group's one member here. Two
// moving at once, each left it to the other: acknowledged and lost
// (test/jepsen TestClusterFull seed 47 on main 2026-12-06: g1 pub2#380,
// read on n3 at 13:01:36.244 while g1m0 and g1m1, claimed there at
// 36.230, moved in from n1, adopted at 36.251-36.252).
//
// Here gd-m0 and gd-m1, the group's members, are offline on n1; CONNECTs
// on n2 claim both, and their moves into n2 wait before their finish
// (finish-asked, which ends at its bound without a newer claim: 20 s,
// finish-asked-for) while
// n2's publisher sends QoS 1 and 2 to the group. Every acknowledged
// message must reach one member, QoS 2 once in all.
func TestReproGroupPublishDuringMovesIn(t *testing.T) {
	t.Parallel() // see harness_test.go
	const prefix = "gd"
	ids := []string{prefix + "-m0", prefix + "-m1"}
	// No adoption by the janitor; a queue that takes everything
	// published meanwhile (the claims' bare connections read nothing).
	// The moves' finish waits 20 s, not finish-asked's 60: long enough
	// for both moves to wait and the publishes between, and 40 s of the
	// package's wall less.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "finish-asked=" + ids[0] + "@n2,finish-asked=" + ids[1] + "@n2,finish-asked-for=20s@n2", Config: "cluster:\n  adopt_after: 60s\nlimits:\n  max_queued: 100000\n"})
	n1, n2 := tc.Nodes[0], tc.Nodes[1]
	for _, id := range ids {
		c := harness.NewPersistent(t, n1, id, paho.SubscribeOptions{Topic: "$share/gd/" + prefix + "/q1", QoS: 1},
			paho.SubscribeOptions{Topic: "$share/gd/" + prefix + "/q2", QoS: 2})
		if err := c.Disconnect(&paho.Disconnect{}); err != nil {
			t.Fatalf("disconnect %s from n1: %v", id, err)
		}
		tc.WaitLog(n1, "client_id="+id+` reason="client disconnected normally"`, 1, harness.Wait)
	}
	pub := harness.Connect(t, n2, prefix+"-pub")
	pub.AwaitInterest(t, prefix+"/q1")
	pub.AwaitInterest(t, prefix+"/q2")
	pp := &pacedPub{t: t, nd: n2, id: prefix + "-pub", prefix: prefix, pub: pub}

	// Both sessions moving into n2, neither adopted.
	for _, id := range ids {
		claimOn(t, tc, n2, id, harness.QueuedExpiry)
	}
	for _, id := range ids {
		waits := `"cluster: test fault: the move's finish waits for a newer claim" node=n2 client_id=` + id
		for start := time.Now(); harness.CountLog(n2, waits) == 0; {
			if time.Since(start) > 60*time.Second {
				t.Fatalf("n2's move of %s did not reach its finish within 60 s; n2:\n%s", id, harness.GrepLog(n2, "client_id="+id))
			}
			pp.publish()
		}
	}
	if harness.CountLog(n2, `"session moved here" node=n2`) > 0 {
		t.Skipf("a move into n2 was adopted before both waited: the test missed its path; n2:\n%s", harness.GrepLog(n2, "client_id="+prefix))
	}
	for range 25 {
		pp.publish()
	}
	// The moves go on at finish-asked-for's bound; the clients resume on n2.
	for _, id := range ids {
		tc.WaitLog(n2, `"session moved here" node=n2 client_id=`+id, 1, 2*time.Minute)
	}
	var cs []*harness.Client
	for _, id := range ids {
		back := harness.ResumeInBackground(t, n2, id, harness.QueuedExpiry)
		c, ok := <-back
		if !ok {
			t.Fatalf("%s not resumed with its session on n2 within 60 s", id)
		}
		cs = append(cs, c)
	}
	t.Logf("%d messages acknowledged, %d with unknown outcome", len(pp.want), pp.unknown)
	got := map[string]int{}
	missing := len(pp.want)
	for deadline := time.After(30 * time.Second); missing > 0; {
		var p *paho.Publish
		select {
		case p = <-cs[0].In:
		case p = <-cs[1].In:
		case <-deadline:
			missing = -1
			continue
		}
		if m := string(p.Payload); m != "probe" {
			if got[m] == 0 && slices.Contains(pp.want, m) {
				missing--
			}
			got[m]++
		}
	}
	var lost []string
	for _, m := range pp.want {
		if got[m] == 0 {
			lost = append(lost, m)
		}
	}
	if len(lost) > 0 {
		t.Fatalf("%d of %d acknowledged messages reached neither member: %v\nn2:\n%s", len(lost), len(pp.want), lost[:min(len(lost), 20)],
			harness.GrepLog(n2, "client_id="+prefix, "cluster:"))
	}
	for m, k := range got {
		if m[1] == '2' && k != 1 {
			t.Errorf("QoS 2 message %s delivered %d times to the group", m, k)
		}
	}
}
