package repro_test

import (
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestReproGroupHeldMovedOut: what a publisher held for a paused node's
// share group is read, once the node resumes, by the node's own follower,
// which claims the group for the member there; the member's session then
// leaves by a live move to the node its client reconnected to, and the
// delivery misses the group. Left "to the member's next reader", it was
// lost: a live move's new owner reads no held subject of the old owner
// (test/jepsen TestClusterFull seed 41 on main, g1 pub2#406-407: held by
// n1 for n3 during n3's pause, claimed for g1m0 at n3's resume, missed at
// 49.470 while g1m0 moved live to n2 at 49.444-49.468). gh-sub, the
// group's only member, is live on n3; n3 is paused while n1's paced
// publisher sends QoS 1 and 2 to the group, long enough for n1 to drop n3
// and hold for it; the client reconnects to n2, whose claim waits for
// n3's answer, and n3 resumes; the fault claim-late holds n3's first
// delivery claimed for gh-sub until the session left n3 (seed 41's
// order), and a follower that reads only after the move finds no member
// of the group here at all (lost the same way). Every acknowledged
// message must reach the member, QoS 2 once.
func TestReproGroupHeldMovedOut(t *testing.T) {
	t.Parallel() // see harness.Main
	const id, prefix = "gh-sub", "gh"
	// No adoption while n3 is paused: the session moves by the client's
	// claim only.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "claim-late=" + id + "@n3", Config: "cluster:\n  adopt_after: 60s\nlimits:\n  max_queued: 100000\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	old := harness.NewPersistent(t, n3, id, paho.SubscribeOptions{Topic: "$share/gh/" + prefix + "/q1", QoS: 1},
		paho.SubscribeOptions{Topic: "$share/gh/" + prefix + "/q2", QoS: 2})
	pub := harness.Connect(t, n1, prefix+"-pub")
	pub.AwaitInterest(t, prefix+"/q1")
	pub.AwaitInterest(t, prefix+"/q2")
	pp := &pacedPub{t: t, nd: n1, id: prefix + "-pub", prefix: prefix, pub: pub}
	// Offline on n3 (still the group's member there): what n3 sends at
	// its resume goes to no connection of this test but the next.
	if err := old.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatalf("disconnect %s from n3: %v", id, err)
	}
	tc.WaitLog(n3, "client_id="+id+` reason="client disconnected normally"`, 1, 10*time.Second)

	tc.Kill(n3, syscall.SIGSTOP)
	// Until n1 holds the group's messages for n3, and a while more.
	const holding = `msg="cluster: holding a message for a dropped node's persistent sessions" node=n1 peer=n3 topic=` + prefix + `/q`
	for start := time.Now(); harness.CountLog(n1, holding) < 20; {
		if time.Since(start) > 60*time.Second {
			tc.Kill(n3, syscall.SIGCONT)
			t.Fatalf("n1 held nothing for paused n3 within 60 s; n1:\n%s", harness.GrepLog(n1, "cluster", "n3"))
		}
		pp.publish()
	}
	// The client comes back on n2, whose claim asks paused n3 to let go.
	back := harness.ResumeInBackground(t, n2, id, 600)
	const claimed = `msg="client id claimed from another node" node=n2 client_id=` + id
	for start := time.Now(); harness.CountLog(n2, claimed) == 0; {
		if time.Since(start) > 30*time.Second {
			tc.Kill(n3, syscall.SIGCONT)
			t.Fatalf("n2 did not claim %s within 30 s; n2:\n%s", id, harness.GrepLog(n2, "client_id="+id))
		}
		pp.publish()
	}
	tc.Kill(n3, syscall.SIGCONT)
	var c *harness.Client
	for start := time.Now(); c == nil; {
		if time.Since(start) > 90*time.Second {
			t.Fatalf("%s not resumed on n2 within 90 s; n2:\n%s", id, harness.GrepLog(n2, "client_id="+id))
		}
		select {
		case c = <-back:
			if c == nil {
				t.Fatalf("%s not resumed with its session on n2 within 60 s; n2:\n%s", id, harness.GrepLog(n2, "client_id="+id))
			}
		default:
			pp.publish()
		}
	}
	if harness.CountLog(n2, `msg="session moved here" node=n2 client_id=`+id+` from=n3`) == 0 ||
		harness.CountLog(n1, holding) == 0 || harness.CountLog(n1, "groups=1") == 0 {
		// Under load the claim may take the session another way (from
		// the stream after n3's answer came too late): what was
		// acknowledged must still arrive, but the path is not tested.
		pp.check(c, n3, n2)
		t.Skipf("%s did not move live from n3 to n2 after n1 held the group's messages for n3: the test missed its path; n2:\n%s",
			id, harness.GrepLog(n2, "client_id="+id))
	}
	pp.check(c, n3, n2)
	t.Logf("n3: %d claim-late waits for %s, %d held deliveries passed on to its new owner, %d left to its next reader; the move:\n%s",
		harness.CountLog(n3, "fault claim-late: the session left; delivering"), id,
		harness.CountLog(n3, "passed on to the member's new owner"), harness.CountLog(n3, "left to the member's next reader"),
		harness.GrepLog(n2, `msg="session moved here" node=n2 client_id=`+id))
}
