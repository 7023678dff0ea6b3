package repro_test

import (
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestReproHeldToDisowned: found by test/jepsen TestClusterFull (short
// faults, seed 453 on main b44475c: 2 acknowledged QoS 2 messages lost
// for share group g1). n3, the node of g1m0, was killed, and n1 held two
// g1 messages for it. n2 took g1m0 from the stream; its read ahead of
// n3's subject failed on a claim and left them to n2's follower, which
// reached them only after n1's claim had disowned n2's copy: it claimed
// them for g1m0 and gave them to that copy, which kept nothing of them
// and ended. n1 had read the stream from the session's last op, n2's
// adoption, after the holds: nobody read them again.
//
// Here hd-a (share-only, QoS 1) lives on n1, which is killed with 20
// messages held for it. hd-a resumes on n2, whose read ahead fails its
// claims (ahead-unanswered) and whose follower of n1's subject does not
// read until n2 lost hd-a (held-until-lost); the client leaves. Its next
// CONNECT goes to n3, whose release request n2 answers after n3's
// releaseTimeout (release-late with held-pending), so n3 reads the
// stream, and n2's answer disowns its copy, to which the follower then
// gives the messages. Every acknowledged message must reach hd-a on n3.
func TestReproHeldToDisowned(t *testing.T) {
	t.Parallel() // see harness.Main
	const id = "hd-a"
	// No janitor adoption of n1's sessions meanwhile; room for the
	// elections after n1's kill.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "ahead-unanswered=" + id + "@n2,held-until-lost=" + id + "@n2,held-pending=" + id + "@n2,release-late=" + id + "@n2", Config: "cluster:\n  adopt_after: 120s\n  forward_timeout: 15s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	expiry := uint32(600)
	m, ack := harness.ConnectWith(t, n1, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
	if ack.ReasonCode != 0 {
		t.Fatalf("%s: CONNACK 0x%02X", id, ack.ReasonCode)
	}
	m.Sub(t, paho.SubscribeOptions{Topic: "$share/hd/hd/#", QoS: 1})
	pub := harness.Connect(t, n3, "hd-pub")
	pub.AwaitInterest(t, "hd/t")

	tc.Kill(n1, syscall.SIGKILL)
	want := harness.PublishOwed(t, n3, "hd-pub", &pub, "hd/t", "held", 20)

	// n2 takes the session from the stream; its follower of n1's subject
	// is left the held messages and waits.
	ac := harness.Resume(t, n2, id, expiry, 60*time.Second)
	tc.WaitLog(n2, `messages held for a node not read yet; following" node=n2 client_id=`+id+" peer=n1", 1, 30*time.Second)
	ac.Disconnect(&paho.Disconnect{})
	tc.WaitLog(n2, "client_id="+id+` reason="client disconnected normally"`, 1, harness.Wait)

	bc := harness.Resume(t, n3, id, expiry, 60*time.Second)
	tc.WaitLog(n2, `test fault: a held follower reads once its session was claimed elsewhere" node=n2`, 1, 30*time.Second)
	got, lost := harness.ReceiveAll(bc, want, 20*time.Second)
	if len(lost) > 0 {
		t.Fatalf("%d of %d acknowledged messages never reached %s on n3: %v\ngot: %v\nn2:\n%s\nn3:\n%s", len(lost), len(want), id, lost, got,
			harness.GrepLog(n2, id, "disowned"), harness.GrepLog(n3, id))
	}
	if harness.CountLog(n3, `previous owner did not confirm the takeover" node=n3 client_id=`+id+" peer=n2") == 0 {
		t.Skipf("the test missed its path: n3 took %s over from n2 rather than from the stream\nn3:\n%s", id, harness.GrepLog(n3, id))
	}
	t.Logf("n2 kept %d held messages its follower read for %s after n3's claim",
		harness.CountLog(n2, "a held message for a session lost here kept in the held subject for it"), id)
}
