package repro_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"github.com/roost-mqtt/roost/packet"
)

// TestReproGroupClaimMissed: a restarted node's follower of what was held
// for it claims a held message's share group for a restored session, and
// the session leaves (its copy dropped: its client resumed elsewhere
// before it settled here) before the delivery: the delivery misses the
// group. The session's claimer reads this node's held subject ahead and
// found the group claimed, and left the message: acknowledged and lost
// (test/jepsen TestClusterFull seed 41, traced: pub0#533 for g1). The
// fault claim-late holds n1's first delivery claimed for gm-sub until
// the session left n1.
func TestReproGroupClaimMissed(t *testing.T) {
	t.Parallel() // see harness.Main
	const id = "gm-sub"
	tc, pp := restartGroupMember(t, "gm", "claim-late="+id+"@n1", "fault claim-late: held message claimed")
	n1, n3 := tc.Nodes[0], tc.Nodes[2]
	c := pp.resume(n3, id)
	tc.WaitLog(n1, "fault claim-late: the session left; delivering", 1, 30*time.Second)
	if harness.CountLog(n1, "restored session claimed elsewhere before it was settled here; dropped") == 0 ||
		harness.CountLog(n1, "held message's share group missed here after its claim") == 0 {
		t.Fatalf("n1 did not drop its unsettled copy of %s between a claim and its delivery: the test missed its path; n1:\n%s",
			id, harness.GrepLog(n1, "client_id="+id, "cluster:"))
	}
	pp.check(c, n1, n3)
}

// TestReproGroupClaimUnanswered: a restarted node's follower of what
// was held for it met a group claim without an answer (its partition
// stream electing a leader) and read again; the message it had fetched
// came back only after the consumer's ack wait (10 s), and the read
// before found nothing and opened the restored gate: the sessions
// settled without it, and a claim from another node then moved the
// session live without it (TestReproGroupClaimMissed's first run: the
// gate open at once, the message applied 10 s later). The fault
// claim-unanswered fails n1's first claim.
func TestReproGroupClaimUnanswered(t *testing.T) {
	t.Parallel() // see harness.Main
	const id = "gu-sub"
	tc, pp := restartGroupMember(t, "gu", "claim-unanswered=1@n1", "restored sessions settled")
	n1, n3 := tc.Nodes[0], tc.Nodes[2]
	if harness.CountLog(n1, "claiming a held message for its share group") == 0 {
		t.Fatalf("n1's first claim did not fail: the test missed its path; n1:\n%s", harness.GrepLog(n1, "cluster:"))
	}
	pp.check(pp.resume(n3, id), n1, n3)
}

// restartGroupMember starts three nodes, PREFIX-sub's persistent session
// on n1, share group ga's only member on PREFIX/q1 (QoS 1) and PREFIX/q2
// (QoS 2), so that every acknowledged message is owed to it, QoS 2 ones
// once; kills n1 while PREFIX-pub on n2 publishes to both; and restarts n1
// with fault, publishing on until n1 logs mark.
func restartGroupMember(t *testing.T, prefix, fault, mark string) (*harness.Cluster, *pacedPub) {
	t.Helper()
	return restartGroupMemberWith(t, prefix, "", fault, mark)
}

// restartGroupMemberWith is restartGroupMember with startFault, if not
// "", in every node's environment from the cluster's start (n1's restart
// has both).
func restartGroupMemberWith(t *testing.T, prefix, startFault, fault, mark string) (*harness.Cluster, *pacedPub) {
	t.Helper()
	// As restartWithFault: no adoption while n1 is dead, and a queue
	// that takes everything published meanwhile.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: startFault,
		Config: "cluster:\n  adopt_after: 60s\nlimits:\n  max_queued: 100000\n"})
	if startFault != "" {
		fault = startFault + "," + fault
	}
	n1, n2 := tc.Nodes[0], tc.Nodes[1]
	harness.NewPersistent(t, n1, prefix+"-sub", paho.SubscribeOptions{Topic: "$share/ga/" + prefix + "/q1", QoS: 1},
		paho.SubscribeOptions{Topic: "$share/ga/" + prefix + "/q2", QoS: 2})
	pub := harness.Connect(t, n2, prefix+"-pub")
	pub.AwaitInterest(t, prefix+"/q1")
	pub.AwaitInterest(t, prefix+"/q2")
	pp := &pacedPub{t: t, nd: n2, id: prefix + "-pub", prefix: prefix, pub: pub}
	pp.restartDuring(tc, n1, fault, mark)
	return tc, pp
}

// TestReproGroupResendElsewhere: a QoS 2 message's first routing gives
// share group ga to its live member on the publishing node, and is not
// confirmed (fault unconfirmed: a forward to another node's plain
// subscriber fails its confirmation); the publisher's client resumes on
// n2 and sends it again (DUP), and n2 prefers its own member of ga. The
// resend claims ga (ClaimResend), but the first routing had claimed
// nothing: both members got it (test/jepsen TestClusterFull: seed 42
// pub0#131 to two members of g0 and of g1, seed 41 pub0#535 for g0;
// RESULTS.md "Share-group resends", the case it did not cover).
func TestReproGroupResendElsewhere(t *testing.T) {
	t.Parallel() // see harness.Main
	const prefix = "ge"
	topic := prefix + "/x"
	tc := harness.StartClusterFault(t, 3, "unconfirmed="+topic+"@n1")
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	// On PREFIX/+: the probes go to PREFIX/probe, not to the fault's topic.
	share := paho.SubscribeOptions{Topic: "$share/ga/" + prefix + "/+", QoS: 2}
	m1 := harness.Connect(t, n1, prefix+"-m1")
	m1.Sub(t, share)
	m2 := harness.Connect(t, n2, prefix+"-m2")
	m2.Sub(t, share)
	plain := harness.Connect(t, n3, prefix+"-plain") // a forward to n3: the fault's way
	plain.Sub(t, paho.SubscribeOptions{Topic: prefix + "/+", QoS: 2})
	harness.Connect(t, n1, prefix+"-probe").AwaitInterest(t, prefix+"/probe")
	harness.Connect(t, n2, prefix+"-probe2").AwaitInterest(t, prefix+"/probe")
	pc, _, err := harness.RawPublisher(t, n1, prefix+"-pub", true)
	if err != nil {
		t.Fatal(err)
	}
	pub := &packet.Publish{QoS: 2, PacketID: 7, Topic: topic, Payload: []byte("m1")}
	if rc, closed := harness.ExchangeQoS2(t, pc, pub); !closed {
		t.Fatalf("PUBLISH not confirmed (fault): PUBREC 0x%02X, want the connection closed (outcome unknown)", byte(rc))
	}
	harness.ResendUntilAcknowledged(t, n2, prefix+"-pub", pub)

	// ga's copies.
	got := map[string]int{}
	gatherCopies(got, func() int { return got["m1 m1"] + got["m2 m1"] }, "m1", m1, "m2", m2)
	total := got["m1 m1"] + got["m2 m1"]
	t.Logf("ga's copies: %v", got)
	if total != 1 {
		t.Fatalf("group ga got the QoS 2 message %d times (%v), want once\nn1:\n%s\nn2:\n%s", total, got,
			harness.GrepLog(n1, prefix+"-", "cluster:"), harness.GrepLog(n2, prefix+"-", "cluster:"))
	}
	if got["m1 m1"] != 1 || harness.CountLog(n2, "share group of a QoS 2 resend left out: another copy claimed it") == 0 {
		t.Skipf("the first routing did not give ga to m1 on n1, or n2's resend did not find ga claimed: the test missed its path (ga got it once)\nn2:\n%s",
			harness.GrepLog(n2, prefix+"-", "cluster:"))
	}
}

// TestReproCatchUpFencedGroup: a restarted node's restored session, a
// share group's only member, settled once what was held for the node up
// to the subject's end at its first read was applied; publishers that had
// not seen the node back yet held more for it meanwhile. A claim from
// another node fenced the copy (disowned: keep.go) before the catch-up
// read that applies those, which gave a disowned copy a held message by
// its plain subscriptions only: the group's messages went to nobody, and
// the copy moved live to the claimer, which reads no held subject
// (TestReproGroupClaimUnanswered under load: 28 of 126 and 10 of 166
// acknowledged messages lost, the ones held after the settling read).
// The fault interest-late has n2 see n1 back 1.5 s late (it holds for n1
// meanwhile); settle-wait has n1's catch-up read come 4 s after its
// settle. The claim comes 3 s after the settle, once n3 knows n1 (a
// claim of a node it does not know reads the stream), within the 2 s a
// release request waits for the catch-up (heldWaitMax).
func TestReproCatchUpFencedGroup(t *testing.T) {
	t.Parallel() // see harness.Main
	const id = "cg-sub"
	tc, pp := restartGroupMemberWith(t, "cg", "interest-late=n1@n2", "settle-wait=4s@n1", "the settled sessions' keys are announced late")
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	settled := time.Now()
	for harness.CountLog(n3, `msg="cluster node joined" node=n3 peer=n1`) < 2 || time.Since(settled) < 3*time.Second {
		if time.Since(settled) > 30*time.Second {
			t.Fatalf("n3 did not see n1 back within 30 s; n3:\n%s", harness.GrepLog(n3, "peer=n1"))
		}
		pp.publish()
	}
	c := pp.resume(n3, id)
	pp.check(c, n1, n3)
	// The path: n1 fenced the copy before its catch-up read, n3 took it
	// live, and n2 held messages for n1 after the read that settled it
	// (what the catch-up read is for). Two timing windows: a loaded
	// machine can miss one; every acknowledged message was checked above
	// all the same, so a miss is logged, not failed.
	fenced := logIndex(n1, "session fenced: its client id is owned by another node (owner records)")
	caught := logIndex(n1, "session caught up with what was held for it")
	if harness.CountLog(n3, `msg="session moved here" node=n3 client_id=`+id+` from=n1`) == 0 || fenced < 0 || caught < fenced {
		t.Logf("the run missed the test's path: n1 did not fence %s before its catch-up read, or n3 did not take it live; n1:\n%s\nn3:\n%s",
			id, harness.GrepLog(n1, "client_id="+id), harness.GrepLog(n3, "client_id="+id))
		return
	}
	if at := logTime(t, n1, "the settled sessions' keys are announced late"); countLogAfter(t, n2, at, "holding a message for a dropped node's persistent sessions\" node=n2 peer=n1") == 0 {
		t.Logf("the run missed the test's path: n2 held nothing for n1 after n1 settled (%s)", at.Format(time.StampMilli))
	}
}

// logIndex returns the line number of the first line of nd's log that
// holds s; -1 for none.
func logIndex(nd *harness.Node, s string) int {
	b, _ := os.ReadFile(nd.LogPath)
	for i, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, s) {
			return i
		}
	}
	return -1
}

// countLogAfter counts the lines of nd's log that hold s, logged after at.
func countLogAfter(t *testing.T, nd *harness.Node, at time.Time, s string) int {
	t.Helper()
	b, _ := os.ReadFile(nd.LogPath)
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, s) && lineTime(t, l).After(at) {
			n++
		}
	}
	return n
}

// lineTime parses a log line's time= field.
func lineTime(t *testing.T, l string) time.Time {
	t.Helper()
	v, _, _ := strings.Cut(strings.TrimPrefix(l, "time="), " ")
	at, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		t.Fatalf("log line without a time: %q", l)
	}
	return at
}
