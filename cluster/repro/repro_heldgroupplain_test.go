package repro_test

import (
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestReproHeldGroupPlainCopy: a message held for a dead node's share
// group, read by a follower that also follows a plain subscriber holding
// the message already, reaches the group. It did not: the follower took
// the plain subscriber's copy for the group's (claimGroups' had was any
// candidate's), claimed the group for the member and delivered it to
// nobody, and every later reader found the claim and left it (test/jepsen
// TestClusterFull seed 58 with long faults: n1 followed n3's, n2's and
// its own held subjects for ps1, taken from the stream and offline there
// with the forwards in its queue, and for g0m0; pub0#289-299,
// pub1#353-363 and pub2#350-359, 32 acknowledged messages, claimed for
// g0m0 at 17:42:59.137-.683 and lost for g0).
//
// hp2-member, the group's only member, and hp2-plain, a plain persistent
// subscriber of the same topics, are offline on n3, which is killed while
// n2's paced publisher sends QoS 1 and 2: n2 holds for n3, the group
// named. hp2-plain resumes on n1 (taken from the stream, so n1 follows the
// held subjects for it) and goes offline there, the forwards queued;
// hp2-member resumes on n1, whose adoption waits adoptWait after its read
// ahead (adopt-wait): n2 goes on holding for n3's group meanwhile, and
// n1's followers read those holds for both sessions after the adoption.
// Every acknowledged message must reach each of them, QoS 2 once.
func TestReproHeldGroupPlainCopy(t *testing.T) {
	t.Parallel() // see harness.Main
	const gid, pid, prefix = "hp2-member", "hp2-plain", "hp2"
	// No adoption by the janitor: the sessions move by their clients'
	// claims only; room for the elections after the kill, and for every
	// message in the plain subscriber's queue.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "adopt-wait=" + gid + "@n1", Config: "cluster:\n  adopt_after: 60s\n  forward_timeout: 15s\nlimits:\n  max_queued: 100000\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	member := harness.NewPersistent(t, n3, gid, paho.SubscribeOptions{Topic: "$share/" + prefix + "/" + prefix + "/q1", QoS: 1},
		paho.SubscribeOptions{Topic: "$share/" + prefix + "/" + prefix + "/q2", QoS: 2})
	plain := harness.NewPersistent(t, n3, pid, paho.SubscribeOptions{Topic: prefix + "/q1", QoS: 1},
		paho.SubscribeOptions{Topic: prefix + "/q2", QoS: 2})
	pub := harness.Connect(t, n2, prefix+"-pub")
	pub.AwaitInterest(t, prefix+"/q1")
	pub.AwaitInterest(t, prefix+"/q2")
	pp := &pacedPub{t: t, nd: n2, id: prefix + "-pub", prefix: prefix, pub: pub}
	for _, c := range []*harness.Client{member, plain} {
		if err := c.Disconnect(&paho.Disconnect{}); err != nil {
			t.Fatalf("disconnect %s from n3: %v", c.ID, err)
		}
		tc.WaitLog(n3, "client_id="+c.ID+` reason="client disconnected normally"`, 1, 10*time.Second)
	}

	tc.Kill(n3, syscall.SIGKILL)
	const holding = `msg="cluster: holding a message for a dropped node's persistent sessions" node=n2 peer=n3 topic=` + prefix + `/q`
	for start := time.Now(); harness.CountLog(n2, holding) < 20; {
		if time.Since(start) > 60*time.Second {
			t.Fatalf("n2 held nothing for killed n3 within 60 s; n2:\n%s", harness.GrepLog(n2, "cluster", "n3"))
		}
		pp.publish()
	}
	// The plain subscriber is taken from the stream on n1 and left
	// offline there: what n2 forwards to it waits in its queue.
	p := pp.resume(n1, pid)
	plainGot := map[string]bool{}
	harness.DrainInbox(p, func(m *paho.Publish) { plainGot[string(m.Payload)] = true })
	if err := p.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatalf("disconnect %s from n1: %v", pid, err)
	}
	tc.WaitLog(n1, "client_id="+pid+` reason="client disconnected normally"`, 1, 10*time.Second)
	harness.DrainInbox(p, func(m *paho.Publish) { plainGot[string(m.Payload)] = true })
	c := pp.resume(n1, gid)
	pp.check(c, n3, n1)
	// The plain subscriber's share is untouched: every acknowledged
	// message, in one connection or the other.
	var owed []string
	for _, m := range pp.want {
		if !plainGot[m] {
			owed = append(owed, m)
		}
	}
	if _, lost := harness.ReceiveAll(harness.Resume(t, n1, pid, 600, 30*time.Second), owed, 30*time.Second); len(lost) > 0 {
		t.Errorf("%s: %d of %d acknowledged messages lost: %v", pid, len(lost), len(pp.want), lost[:min(len(lost), 20)])
	}

	const path = `msg="cluster: a held message that sessions here hold is claimed for a share group none of whose members here holds it" node=n1`
	if harness.CountLog(n1, `msg="session moved here" node=n1 client_id=`+pid+` from="replicated record"`) == 0 ||
		harness.CountLog(n1, `msg="session moved here" node=n1 client_id=`+gid+` from="replicated record"`) == 0 ||
		harness.CountLog(n1, path) == 0 {
		// Under load n2 may see the member's interest on n1 before its
		// adoption's wait is over, or the plain subscriber may have no
		// copy left when a hold is read: what was acknowledged arrived,
		// but the path is not tested.
		t.Skipf("n1's followers read no held group message that the plain subscriber held: the test missed its path; n1:\n%s",
			harness.GrepLog(n1, "client_id="+prefix))
	}
	t.Logf("n1: %d held messages claimed for the group though the plain subscriber held them", harness.CountLog(n1, path))
}
