package cluster_test

import (
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// TestReproGroupPassOnEarly is TestReproGroupPassOn's first window: a
// restarted node's restored copy of the group's only member here takes
// the group's messages the others forward to it before the node has
// caught up with their interest. Not knowing the member elsewhere, the
// node kept them for the copy in its held subject, which the session's
// owner (by a live move) never reads: acknowledged and lost for the
// group (TestReproGroupPassOn lost one 1 in 4 runs this way before it
// waited for "cluster interest caught up"). The member moves from n1
// (killed) to n3 from the stream, then live to n2; n1 comes back with
// interest-late for n2 (n2's heartbeats and interest reach it 1.5 s
// late, so n1 catches up that late, its restored copy settled and dropped
// by then or not), while n3's paced publisher sends QoS 1 and 2 to the
// group from n1's start on. Every acknowledged message must reach the member,
// QoS 2 once.
func TestReproGroupPassOnEarly(t *testing.T) {
	t.Parallel() // see harness_test.go
	const id, prefix = "ge-sub", "ge"
	cfg := filepath.Join(t.TempDir(), "roost.yaml")
	// No adoption while n1 is dead: the session moves by the client's
	// claims only.
	writeAtomic(t, cfg, []byte("cluster:\n  adopt_after: 60s\nlimits:\n  max_queued: 100000\n"), 0o644)
	tc := startClusterWith(t, 3, "--config", cfg)
	n1, n2, n3 := tc.nodes[0], tc.nodes[1], tc.nodes[2]
	newPersistent(t, n1, id, paho.SubscribeOptions{Topic: "$share/ge/" + prefix + "/q1", QoS: 1},
		paho.SubscribeOptions{Topic: "$share/ge/" + prefix + "/q2", QoS: 2})
	pub := connect(t, n3, prefix+"-pub")
	pub.awaitInterest(t, prefix+"/q1")
	pub.awaitInterest(t, prefix+"/q2")
	pp := &pacedPub{t: t, nd: n3, id: prefix + "-pub", prefix: prefix, pub: pub}
	got := map[string]int{}
	take := func(p *paho.Publish) {
		if s := string(p.Payload); s != "probe" {
			got[s]++
		}
	}

	tc.kill(n1, syscall.SIGKILL)
	// From the stream on n3, then live to n2, whose owner reads none of
	// n1's held subject.
	c := pp.resume(n3, id)
	quiet(c, take, time.Second)
	if err := c.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatalf("disconnect %s from n3: %v", id, err)
	}
	quiet(c, take, 200*time.Millisecond)
	c = pp.resume(n2, id)
	if countLog(n2, `msg="session moved here" node=n2 client_id=`+id+` from=n3`) == 0 {
		t.Fatalf("%s did not move live from n3 to n2: the test missed its path; n2:\n%s", id, grepLog(n2, "client_id="+id))
	}

	n1.Env = append(n1.Env, "ROOST_TEST_FAULT=interest-late=n2@n1")
	const caughtUp = `msg="cluster interest caught up" node=n1`
	const dropped = `msg="restored session dropped: another node owns it now" node=n1 client_id=` + id
	before, droppedBefore := countLog(n1, caughtUp), countLog(n1, dropped)
	tc.start(n1)
	// Published from n1's start on, until a while after it caught up
	// and dropped its copy: n3 routes the group to n1 by turns once it
	// has n1's restored interest, before n1 has n2's.
	var end time.Time
	for start := time.Now(); end.IsZero() || time.Now().Before(end); {
		if time.Since(start) > 60*time.Second {
			t.Fatalf("n1 did not catch up and drop its restored copy of %s within 60 s; n1:\n%s", id, grepLog(n1, "cluster", "restored"))
		}
		if end.IsZero() && countLog(n1, caughtUp) > before && countLog(n1, dropped) > droppedBefore {
			end = time.Now().Add(500 * time.Millisecond)
		}
		pp.publish()
		drainInbox(c, take)
	}
	if countLog(n1, "cluster: test fault: a peer's interest is handled late") == 0 {
		t.Fatalf("n1 did not take the fault: the test missed its path; n1:\n%s", grepLog(n1, "cluster:", "restored"))
	}

	t.Logf("%d messages acknowledged, %d with unknown outcome", len(pp.want), pp.unknown)
	var missing []string
	for _, m := range pp.want {
		if got[m] == 0 {
			missing = append(missing, m)
		}
	}
	more, lost := receiveAll(c, missing, 30*time.Second)
	for m, k := range more {
		got[m] += k
	}
	quiet(c, take, time.Second)
	if len(lost) > 0 {
		t.Fatalf("%d of %d acknowledged messages lost: %v\nn1:\n%s\nn2:\n%s", len(lost), len(pp.want), lost[:min(len(lost), 20)],
			grepLog(n1, "client_id="+id, "clients=[", "cluster:", "restored"), grepLog(n2, "client_id="+id, "cluster:"))
	}
	for m, k := range got {
		if m[1] == '2' && k != 1 {
			t.Errorf("QoS 2 message %s delivered %d times", m, k)
		}
	}
	// Before n1 caught up, n3 routed the group to n1: kept for the
	// restored copy or held for its group after the drop (before the
	// change), or waited for the catch-up and passed on (the change).
	// Under heavy load n1 may read the owners and drop its copy before
	// n3 has its restored interest (seen once at load 49): nothing was
	// lost, and nothing was tested.
	if countLog(n1, `kept in the held subject" node=n1 clients=[`+id+`]`) == 0 &&
		countLog(n1, `hold keys held for this node" node=n1 clients=[`+id+`]`) == 0 &&
		countLog(n1, "waited for the other nodes' interest") == 0 {
		t.Skipf("n3 routed nothing for the group to n1 before n1 caught up: the test missed its path; n1:\n%s", grepLog(n1, "cluster:", "restored"))
	}
}
