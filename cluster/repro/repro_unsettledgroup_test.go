package repro_test

import (
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestReproUnsettledGroup: a restarted node announces its restored
// sessions' share group memberships as routing interest at once, so a
// publisher may choose it to serve a group, and then does not hold the
// message for it (heldTargets: the group is served). The restored copy
// took the message; once the node read the owner records and found the
// session owned elsewhere, it dropped the copy with it, and its ops
// reached the stream at epoch 0, which readers skip: acknowledged, and
// lost for the group (test/jepsen TestClusterFull seeds 41, 42, 45 and 46
// on main, 2026-12-06: 24 of their 27 group losses, 1-17 a run). Here
// the group's only member moves to n3 while n1 is dead, and n1 comes back
// with the fault owners-late, which holds its read of the owner records
// for 3 s: meanwhile n2's publisher gives about half of the group's
// messages to n1.
func TestReproUnsettledGroup(t *testing.T) {
	t.Parallel() // see harness.Main
	const id = "ug-sub"
	// No adoption while n1 is dead: the session moves by the client's
	// claim only.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Config: "cluster:\n  adopt_after: 60s\nlimits:\n  max_queued: 100000\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	expiry := uint32(600)
	s, ack := harness.ConnectWith(t, n1, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
	if ack.ReasonCode != 0 {
		t.Fatalf("CONNACK 0x%02X", ack.ReasonCode)
	}
	s.Sub(t, paho.SubscribeOptions{Topic: "$share/ug/ug/q1", QoS: 1}, paho.SubscribeOptions{Topic: "$share/ug/ug/q2", QoS: 2})
	pub := harness.Connect(t, n2, "ug-pub")
	pub.AwaitInterest(t, "ug/q1")
	pub.AwaitInterest(t, "ug/q2")
	pp := &pacedPub{t: t, nd: n2, id: "ug-pub", prefix: "ug", pub: pub}
	tc.Kill(n1, syscall.SIGKILL)
	c := pp.resume(n3, id)
	n1.Env = append(n1.Env, "ROOST_TEST_FAULT=owners-late=3s@n1")
	restored := harness.WatchRestored(n1, id)
	tc.Start(n1)
	// Dropped by the owners read, or fenced before it (the copy takes
	// group messages until then either way).
	restored.Wait(t, 60*time.Second, pp.publish)
	if harness.CountLog(n1, "cluster: test fault: the owner records are read late") == 0 {
		t.Fatalf("n1 read the owner records without the fault: the test missed its path")
	}
	for end := time.Now().Add(time.Second); time.Now().Before(end); {
		pp.publish()
	}
	pp.check(c, n1, n3)
}
