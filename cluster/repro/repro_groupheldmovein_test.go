package repro_test

import (
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"github.com/roost-mqtt/roost/packet"
)

// TestReproGroupHeldMoveIn: share group hm's member hm-a moves live from
// n1 to n2 (its finish slowed: finish-slow), and a persistent publisher
// on n2 sends QoS 2 m1 meanwhile. hm has no member in n2's server, only
// the session moving in, so n2 holds m1 for the move and gives it to
// hm-a at the adoption; the publisher's PUBREC waits for that, and then
// fails (fault unconfirmed: n3's plain subscriber's forward is not
// confirmed), so the publisher sends m1 again on n3, where hm's other
// member hm-b is live. Before, nothing claimed hm for a held message
// delivered at an adoption: n3's resend found hm unclaimed and gave it
// to hm-b, two members (test/jepsen TestClusterFull short faults, seed
// 231: g1 pub0#162, routed on n2 as g1m0 moved in from n1, given to g1m0
// at the adoption, resent on n1 and given to g1m1 on n3;
// bench/jepsen/RESULTS.md, t231).
func TestReproGroupHeldMoveIn(t *testing.T) {
	t.Parallel() // see harness.Main
	const prefix = "hm"
	ida, topic := prefix+"-a", prefix+"/x"
	// The publisher's connection closes once its wait fails: after the
	// adoption (finish-slow's 1.5 s), well within forward_timeout.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "finish-slow=" + ida + "@n2,unconfirmed=" + topic + "@n2", Config: "cluster:\n  forward_timeout: 4s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	share := paho.SubscribeOptions{Topic: "$share/hm/" + prefix + "/+", QoS: 2}
	plain := harness.Connect(t, n3, prefix+"-plain") // a forward to n3: the fault's way
	plain.Sub(t, paho.SubscribeOptions{Topic: prefix + "/+", QoS: 2})
	b := harness.NewPersistent(t, n3, prefix+"-b", share)
	a := harness.NewPersistent(t, n1, ida, share)
	a.Disconnect(&paho.Disconnect{})
	tc.WaitLog(n1, "client_id="+ida+` reason="client disconnected normally"`, 1, harness.Wait)
	harness.Connect(t, n2, prefix+"-probe").AwaitInterest(t, prefix+"/probe")
	pc, _, err := harness.RawPublisher(t, n2, prefix+"-pub", true)
	if err != nil {
		t.Fatal(err)
	}

	// The move of hm-a to n2 waits before its finish; m1 is published
	// on n2 meanwhile, held for the move.
	resumed := harness.ResumeInBackground(t, n2, ida, harness.QueuedExpiry)
	tc.WaitLog(n2, `"cluster: test fault: the move's finish waits" node=n2 client_id=`+ida, 1, harness.Wait)
	pub := &packet.Publish{QoS: 2, PacketID: 9, Topic: topic, Payload: []byte("m1")}
	if rc, closed := harness.ExchangeQoS2(t, pc, pub); !closed {
		t.Fatalf("PUBLISH answered PUBREC 0x%02X, want the connection closed (outcome unknown)", byte(rc))
	}
	back, ok := <-resumed
	if !ok {
		t.Fatalf("%s never resumed on n2", ida)
	}
	if harness.CountLog(n2, `"session moved here" node=n2 client_id=`+ida+` from=n1 subscriptions=1 messages=0 held=1`) == 0 {
		t.Skipf("n2 held nothing for %s's move: the test missed its path\nn2:\n%s", ida, harness.GrepLog(n2, ida))
	}
	// The claim follows the copy's durability, a stream round trip
	// after the adoption; roost without the change logs none.
	awaitLogs(n2, 10*time.Second, 1, `"cluster: share groups of a first routing claimed" node=n2 client_id=`+prefix+"-pub")

	harness.ResendUntilAcknowledged(t, n3, prefix+"-pub", pub)
	got := copiesOfM1(t, back, b)
	if n := got["a"] + got["b"]; n != 1 {
		t.Fatalf("group hm got the acknowledged QoS 2 message %d times (%v), want once\nn2:\n%s\nn3:\n%s", n, got,
			harness.GrepLog(n2, prefix+"-", "share group"), harness.GrepLog(n3, prefix+"-", "share group"))
	}
	if harness.CountLog(n3, `"share group of a QoS 2 resend left out: another copy claimed it" client_id=`+prefix+"-pub") == 0 {
		t.Skipf("group hm got it once (%v), but not by the claim of the copy held for the move: the test missed its path", got)
	}
}
