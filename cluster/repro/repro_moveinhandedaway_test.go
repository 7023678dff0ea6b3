package repro_test

import (
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"github.com/roost-mqtt/roost/internal/clustertest"
)

// TestReproMoveInHandedAway: ha-a, share group ha's only member, offline
// on n1, is resumed on n2: a live move, which adopts the session and then
// waits before its confirmation (adopted-slow, as a move whose ops the
// partition streams confirm seconds late). Its client, no CONNACK come,
// resumes on n1 meanwhile, and n2 hands the adopted session over live.
// A publisher on n2 then sends QoS 1 messages to ha: every one must reach
// ha-a on n1. Before, the move's own count of ha in n2's interest stayed
// until the confirmation, so n2 left ha to its broker, which had no member
// of it: acknowledged and lost (test/jepsen TestClusterFull short faults,
// seed 308: g1 lost pub1#195, #196 and pub2#237, published on n1 at
// 24.60-24.78 while n1's move of g1m1, handed to n3 at 22.27, waited
// until 24.91; bench/jepsen/RESULTS.md, gl308).
//
// The CONNECT on n2, its claim overtaken so, must then get no CONNACK
// (the client connects again and takes the session from n1). Before, the
// move's end answered it as if its claim stood: CONNACK with Session
// Present 0, the session being n1's, and its client started afresh on a
// copy nobody owned (test/jepsen TestClusterFull seed 847: n2's claim of
// g0m0 at epoch 5 overtaken by n1's 6; 25 acknowledged g0 messages lost
// to that copy; bench/jepsen/RESULTS.md, sp847).
func TestReproMoveInHandedAway(t *testing.T) {
	t.Parallel() // see harness.Main
	const prefix = "ha"
	ida, topic := prefix+"-a", prefix+"/x"
	tc := harness.StartClusterFault(t, 3, "adopted-slow="+ida+"@n2")
	n1, n2 := tc.Nodes[0], tc.Nodes[1]
	share := paho.SubscribeOptions{Topic: "$share/ha/" + prefix + "/+", QoS: 1}
	a := harness.NewPersistent(t, n1, ida, share)
	a.Disconnect(&paho.Disconnect{})
	tc.WaitLog(n1, "client_id="+ida+` reason="client disconnected normally"`, 1, harness.Wait)
	harness.Connect(t, n2, prefix+"-probe").AwaitInterest(t, prefix+"/probe")
	pub := harness.Connect(t, n2, prefix+"-pub")

	// One CONNECT on n2, not retried: its CONNACK waits for the move,
	// and a retry would claim the session back from n1.
	expiry := uint32(harness.QueuedExpiry)
	first := make(chan *paho.Connack, 1) // nil: no CONNACK
	go func() {
		c, ack, err := clustertest.Dial(t, n2.MQTT, &paho.Connect{ClientID: ida, CleanStart: false, KeepAlive: 30,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
		if err == nil {
			c.Disconnect(&paho.Disconnect{})
		}
		first <- ack
	}()
	tc.WaitLog(n2, `"cluster: test fault: the move's adoption waits before its confirmation" node=n2 client_id=`+ida, 1, 20*time.Second)
	back := harness.Resume(t, n1, ida, harness.QueuedExpiry, 20*time.Second)
	tc.WaitLog(n1, `"session moved here" node=n1 client_id=`+ida+" from=n2", 1, harness.Wait)

	owed := harness.PublishOwedQoS(t, n2, prefix+"-pub", &pub, topic, "m", 5, 1)
	if harness.CountLog(n2, `"session moved here" node=n2 client_id=`+ida) > 0 {
		t.Skipf("n2's move of %s was confirmed before the publishes: the test missed its path\nn2:\n%s", ida, harness.GrepLog(n2, ida))
	}
	if _, lost := harness.ReceiveAll(back, owed, 10*time.Second); len(lost) > 0 {
		t.Fatalf("%d of %d acknowledged QoS 1 messages to group ha lost: %v\nn1:\n%s\nn2:\n%s", len(lost), len(owed), lost,
			harness.GrepLog(n1, ida, "share group"), harness.GrepLog(n2, ida, "share group", "test fault"))
	}
	select {
	case ack := <-first:
		if ack != nil {
			t.Fatalf("n2's CONNECT of %s, its claim overtaken by n1's while its move waited, answered: CONNACK 0x%02X, Session Present %v\nn2:\n%s",
				ida, ack.ReasonCode, ack.SessionPresent, harness.GrepLog(n2, ida))
		}
	case <-time.After(clustertest.ConnectBound):
		t.Fatalf("n2's CONNECT of %s not answered nor closed within %s", ida, clustertest.ConnectBound)
	}
}
