package repro_test

import (
	"context"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestReproGroupPublishDuringMoveIn: a share-group message published on
// the node a member's session is moving to, just as the move begins,
// reaches the member. A publish looks at the moves under way (to hold a
// message for an arriving session), then at the node's interest (to
// leave a group with a member here to the broker). A move that began
// between the two looks made the group "served here" by nobody: no
// member in the server yet, nothing held for the move, nothing
// forwarded to the old owner. The publisher got its PUBACK and the
// message went nowhere (TestClusterLiveHandoverRounds/shared lost one
// message in about 20 runs under load; a per-message trace showed the
// publish on the new owner planning no target and holding nothing).
// straddle-move holds n2's publish between its two looks until the
// move of the member's session into n2 began.
func TestReproGroupPublishDuringMoveIn(t *testing.T) {
	t.Parallel() // see harness.Main
	const id, name = "gs-sub", "gs/t"
	tc := harness.StartClusterFault(t, 3, "straddle-move="+name+"@n2")
	n1, n2 := tc.Nodes[0], tc.Nodes[1]
	sub := harness.OriginSub(t, n1, id, "$share/g/gs/#")
	pub := harness.Connect(t, n2, "gs-pub")
	pub.AwaitInterest(t, "gs/probe") // not the fault's topic
	sub.Disconnect(&paho.Disconnect{})
	tc.WaitLog(n1, `client_id=`+id+` reason="client disconnected normally"`, 1, 20*time.Second)

	// The publish waits in n2 between its looks at the moves until the
	// member's CONNECT on n2 starts moving the session there.
	acked := make(chan byte, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), harness.PublishBound+straddleBound)
		defer cancel()
		rc := byte(0x80) // no answer, or the connection closed: not owed
		if r, err := pub.Publish(ctx, &paho.Publish{Topic: name, QoS: 1, Payload: []byte("straddled")}); err == nil {
			rc = r.ReasonCode
		}
		acked <- rc
	}()
	tc.WaitLog(n2, `"cluster: test fault: a publish waits for a move in between its looks at the moves" node=n2 topic=`+name, 1, 20*time.Second)
	back := harness.Resume(t, n2, id, harness.OriginExpiry, 60*time.Second)
	var rc byte
	select {
	case rc = <-acked:
	case <-time.After(harness.PublishBound + straddleBound + 10*time.Second):
		t.Fatal("the publish was never answered")
	}
	if rc >= 0x80 {
		// Under load the forward can time out (hunta32's pass 5, load
		// ~100): a missed path, not a failure.
		t.Skipf("PUBACK 0x%02X: the straddling publish was not acknowledged, so nothing is owed; the test missed its path", rc)
	}
	got, lost := harness.ReceiveAll(back, []string{"straddled"}, 30*time.Second)
	if len(lost) > 0 {
		t.Fatalf("%s on n2 got %v, not the group message acknowledged (PUBACK 0x%02X) as its session moved there; n2:\n%s",
			id, got, rc, harness.GrepLog(n2, id))
	}
}

// straddleBound is past straddle-move's longest wait (60 s for the move).
const straddleBound = 70 * time.Second
