package repro_test

import (
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestReproHoldSameIDGroup: a publisher's hold of a message for a node's
// share group reaches the group when the node holds the same forward for
// itself first. It did not: the two appends had one message id, the
// publisher's named the group (held for a claim's hold keys there) and
// the node's (holdHere, for another claim's plain keys) did not, and
// JetStream kept the node's, which came first, and answered the
// publisher's "duplicate" (test/jepsen TestClusterFull short faults seed
// 260, session 24: n2, restarted, held pub2#74-#76 for n3 with g0 for
// g0m0's claim there; n3, which had ps0 live and ps1's and ps3's claims
// reading the stream, held the same forwards for itself; its appends
// landed first at 12.058-12.588, after the partition's election, and n2's
// were answered "held for a node already": g0 never got the three).
//
// hs-member (the group's only member) and hs-plain (a plain subscriber
// of the same topics) are offline on n2, which is killed; both resume on
// n1 at once, whose claims read the stream and wait before their
// adoption (adopt-wait, adopt-wait-for), their keys out, as g0m0's and
// ps1's were on n3. n2 restarts meanwhile, finds both claimed elsewhere
// and drops its restored copies, and its paced publisher holds for n1,
// the group named, and forwards to n1 for its clean subscriber hs-live,
// whose arrival n1 holds for hs-plain's keys. hold-unanswered on n2 makes
// each of its holds wait for a second append (as while the partition
// stream elects a leader), so n1's lands first. Every acknowledged
// message must reach hs-member, QoS 2 once.
func TestReproHoldSameIDGroup(t *testing.T) {
	t.Parallel() // see harness.Main
	const gid, pid, prefix = "hs-member", "hs-plain", "hs"
	// No adoption by the janitor: the sessions move by their clients'
	// claims only; room for the elections after the kill.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "adopt-wait=" + gid + "@n1,adopt-wait=" + pid + "@n1,adopt-wait-for=12s@n1", Config: "cluster:\n  adopt_after: 60s\n  forward_timeout: 15s\nlimits:\n  max_queued: 100000\n"})
	n1, n2 := tc.Nodes[0], tc.Nodes[1]
	member := harness.NewPersistent(t, n2, gid, paho.SubscribeOptions{Topic: "$share/" + prefix + "/" + prefix + "/q1", QoS: 1},
		paho.SubscribeOptions{Topic: "$share/" + prefix + "/" + prefix + "/q2", QoS: 2})
	plain := harness.NewPersistent(t, n2, pid, paho.SubscribeOptions{Topic: prefix + "/q1", QoS: 1},
		paho.SubscribeOptions{Topic: prefix + "/q2", QoS: 2})
	for _, c := range []*harness.Client{member, plain} {
		if err := c.Disconnect(&paho.Disconnect{}); err != nil {
			t.Fatalf("disconnect %s from n2: %v", c.ID, err)
		}
		tc.WaitLog(n2, "client_id="+c.ID+` reason="client disconnected normally"`, 1, 10*time.Second)
	}
	// A live subscriber on n1: n2 forwards every message there.
	live := harness.Connect(t, n1, prefix+"-live")
	live.Sub(t, paho.SubscribeOptions{Topic: prefix + "/#", QoS: 2})
	discard(t, live)

	tc.Kill(n2, syscall.SIGKILL)
	plainBack := harness.ResumeInBackground(t, n1, pid, harness.QueuedExpiry)
	memberBack := harness.ResumeInBackground(t, n1, gid, harness.QueuedExpiry)
	tc.WaitLog(n1, `msg="cluster: test fault: adoption waits after the read ahead" node=n1 client_id=`+gid, 1, 30*time.Second)
	n2.Env = append(n2.Env, "ROOST_TEST_FAULT=hold-unanswered=1000000@n2")
	tc.Start(n2)
	var pub *harness.Client
	harness.Eventually(t, 60*time.Second, func() error { return harness.Redial(t, n2, prefix+"-pub", &pub) })
	// No probe: n2 closes CONNECTs until it caught up with the others'
	// interest (hs-live's), and its holds wait for their second append.
	pp := &pacedPub{t: t, nd: n2, id: prefix + "-pub", prefix: prefix, pub: pub}
	var c *harness.Client
	var stop time.Time
	for start := time.Now(); stop.IsZero() || time.Now().Before(stop); {
		if time.Since(start) > 90*time.Second {
			t.Fatalf("%s not resumed within 90 s; n1:\n%s", gid, harness.GrepLog(n1, "client_id="+prefix))
		}
		select {
		case got, ok := <-memberBack:
			if !ok {
				t.Fatalf("%s not resumed with its session on n1 within 60 s", gid)
			}
			c, stop = got, time.Now().Add(time.Second)
		default:
		}
		pp.publish()
	}
	if p, ok := <-plainBack; ok {
		discard(t, p)
	}
	pp.check(c, n2, n1)

	const hereHeld = `msg="cluster: a forward that reached an ended copy's hold keys held for this node" node=n1 clients=[` + pid + `]`
	const groupHeld = `msg="cluster: holding a message for a dropped node's persistent sessions" node=n2 peer=n1 topic=` + prefix + `/q`
	if harness.CountLog(n1, `msg="session moved here" node=n1 client_id=`+gid+` from="replicated record"`) == 0 ||
		harness.CountLog(n1, hereHeld) == 0 || harness.CountLog(n2, groupHeld) == 0 {
		t.Skipf("n1 held no forward for %s's keys while n2 held for n1: the test missed its path; n1:\n%s\nn2:\n%s",
			pid, harness.GrepLog(n1, "client_id="+prefix, "clients=["+prefix), harness.GrepLog(n2, "peer=n1", "client_id="+prefix))
	}
	t.Logf("n1 held %d forwards for %s's claim keys; n2 held %d for n1", harness.CountLog(n1, hereHeld), pid, harness.CountLog(n2, groupHeld))
}

// discard reads what c receives until the test ends, so that its bounded
// inbox never holds its connection up.
func discard(t *testing.T, c *harness.Client) {
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	go func() {
		for {
			select {
			case <-c.In:
			case <-done:
				return
			}
		}
	}()
}
