package repro_test

import (
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"github.com/roost-mqtt/roost/packet"
)

// TestReproGroupServedSilent: a QoS 2 message's first routing on n1 gives
// share group ss to its live member there, ss-a, and n1's claim of the
// group gets no answer at all (fault served-silent: nats.go's "timeout
// waiting for ack" a second later, as for an append to a partition
// stream whose leader was just killed). n3's plain subscriber's forward
// is not confirmed (fault unconfirmed), so the publisher is not answered;
// once n1's claim is settled it resends on n3, where the group's other
// member ss-b is live. Before, the claim was
// given up at that error (settleClaim published again only on "no
// response from stream"), and the resend claimed the group for ss-b:
// both members got it (test/jepsen TestClusterFull short faults, seed
// 325: pub0#36 given to g0m0 on n2, its claim sent into ROOST_SESS_4 as
// its leader n1 was killed, given up 5 s later, 51 ms after the new
// leader was elected; pub0's resend on n3 claimed g0 for g0m1;
// bench/jepsen/RESULTS.md, gd320 and sc325).
func TestReproGroupServedSilent(t *testing.T) {
	t.Parallel() // see harness.Main
	const prefix = "ss"
	topic := prefix + "/x"
	// The publisher's close waits forward_timeout for the unconfirmed
	// forward, past the fault's unanswered claim (a second).
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "served-silent=" + prefix + "-pub@n1,unconfirmed=" + topic + "@n1", Config: "cluster:\n  forward_timeout: 4s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	plain := harness.Connect(t, n3, prefix+"-plain") // a forward to n3: the fault's way
	plain.Sub(t, paho.SubscribeOptions{Topic: prefix + "/+", QoS: 2})
	share := paho.SubscribeOptions{Topic: "$share/" + prefix + "/" + topic, QoS: 2}
	b := harness.NewPersistent(t, n3, prefix+"-b", share)
	harness.Connect(t, n1, prefix+"-probe").AwaitInterest(t, prefix+"/probe") // n1 knows n3's plain subscriber
	a := harness.NewPersistent(t, n1, prefix+"-a", share)                     // live on n1: n1 serves the group itself
	pc, _, err := harness.RawPublisher(t, n1, prefix+"-pub", true)
	if err != nil {
		t.Fatal(err)
	}
	pub := &packet.Publish{QoS: 2, PacketID: 9, Topic: topic, Payload: []byte("m1")}
	if rc, closed := harness.ExchangeQoS2(t, pc, pub); !closed {
		t.Fatalf("PUBLISH answered PUBREC 0x%02X, want the connection closed (outcome unknown)", byte(rc))
	}
	if harness.CountLog(n1, `"cluster: test fault: a first routing's share group claim left unanswered" node=n1 client_id=`+prefix+"-pub") == 0 {
		t.Skipf("n1 claimed no served group for %s-pub (ss went to %s-b, or the copy was not durable): the test missed its path", prefix, prefix)
	}

	// The resend comes once n1's claim is settled, as seed 325's came
	// after the stream's election (the publisher's close and move): the
	// claim made (published again), or given up (before the change, at
	// the unanswered append's error).
	settled := func() int {
		return harness.CountLog(n1, `"cluster: share groups of a first routing claimed" node=n1 client_id=`+prefix+"-pub") +
			harness.CountLogAll(n1, `"cluster: share group of a first routing not claimed`, "client_id="+prefix+"-pub ")
	}
	for start := time.Now(); settled() == 0; time.Sleep(20 * time.Millisecond) {
		if time.Since(start) > 30*time.Second {
			t.Fatalf("n1's claim of group ss neither made nor given up within 30 s\nn1:\n%s", harness.GrepLog(n1, prefix+"-pub"))
		}
	}
	harness.ResendUntilAcknowledged(t, n3, prefix+"-pub", pub)
	got := copiesOfM1(t, a, b)
	if n := got["a"] + got["b"]; n != 1 {
		t.Fatalf("group ss got the acknowledged QoS 2 message %d times (%v), want once\nn1:\n%s\nn2:\n%s\nn3:\n%s", n, got,
			harness.GrepLog(n1, prefix+"-", "share group"), harness.GrepLog(n2, prefix+"-", "share group"), harness.GrepLog(n3, prefix+"-", "share group"))
	}
	if got["a"] != 1 {
		t.Skipf("group ss got it once, at %s-b (%v): n1 did not serve it, the test missed its path", prefix, got)
	}
}
