package repro_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// TestReproClaimDuringMoveIn: a newer claim that asks a node to let go of
// a session still moving there gets the session once it arrived, not
// "nothing to hand over". Before, it got nothing: the session had left
// the old owner (exported, its subscriptions taken off the tree) and was
// not in the new owner's server yet. When the newer claim was the old
// owner's own (a client that gave up on its CONNACK on n2 and came back to
// n1, as the mqtt.js clients of TestClusterTransports/NodeKill do after a
// node loss), the client resumed the exported copy there with Session
// Present 1 and got nothing published after it: every message went to
// the copy the move then adopted on n2, fenced there and ended. Found
// reading the code for NodeKill's lost tail (bench/jepsen/RESULTS.md);
// the tail seen there had another cause (held.go, heldFollower.join).
// move-late holds n2's adoption, once n1 exported the session, until
// n1's claim asked n2 to let go.
func TestReproClaimDuringMoveIn(t *testing.T) {
	t.Parallel() // see harness.Main
	const id = "ml-sub"
	tc := harness.StartClusterFault(t, 3, "move-late="+id+"@n2")
	n1, n2 := tc.Nodes[0], tc.Nodes[1]
	const expiry = harness.OriginExpiry
	sub := harness.OriginSub(t, n1, id, "ml/#")
	pub := harness.Connect(t, n1, "ml-pub")
	pub.AwaitInterest(t, "ml/t")
	sub.Disconnect(&paho.Disconnect{})
	tc.WaitLog(n1, `client_id=`+id+` reason="client disconnected normally"`, 1, 20*time.Second)
	if rc := pub.Pub(t, &paho.Publish{Topic: "ml/t", QoS: 1, Payload: []byte("before")}); rc != 0 {
		t.Fatalf("publish before the move: PUBACK 0x%02X", rc)
	}

	// A CONNECT on n2 moves the session there from n1; n2's adoption
	// waits (move-late) once n1 exported it. Raw: the test does not
	// care how this older connection ends.
	const late = `"cluster: test fault: the move's adoption waits for a newer claim" node=n2 client_id=` + id
	harness.Eventually(t, 60*time.Second, func() error {
		c := mqtttest.Dial(t, n2.MQTT, packet.V5)
		c.Send(&packet.Connect{ProtocolVersion: packet.V5, ClientID: id, KeepAlive: 30,
			Properties: packet.Properties{Present: 1 << packet.PropSessionExpiry, SessionExpiry: expiry}})
		first := make(chan error, 1)
		go func() {
			p, err := c.Read(60 * time.Second)
			first <- fmt.Errorf("CONNECT on n2 ended before the move's adoption: %v %v", p, err)
		}()
		for harness.CountLog(n2, late) == 0 {
			select {
			case err := <-first:
				return err
			case <-time.After(50 * time.Millisecond):
			}
		}
		return nil
	})

	// The client gives up on n2 and connects to n1 again.
	back := harness.Resume(t, n1, id, expiry, 60*time.Second)
	if rc := pub.Pub(t, &paho.Publish{Topic: "ml/t", QoS: 1, Payload: []byte("after")}); rc != 0 {
		t.Fatalf("publish after the client came back: PUBACK 0x%02X", rc)
	}
	got := map[string]bool{}
	for !got["after"] {
		select {
		case m := <-back.In:
			if string(m.Payload) != "probe" {
				got[string(m.Payload)] = true
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s on n1 got %v, not the message acknowledged after it came back with its session; n1:\n%s\nn2:\n%s",
				id, got, harness.GrepLog(n1, id), harness.GrepLog(n2, id))
		}
	}
	if !got["before"] {
		t.Errorf("%s got %v: not the message queued before the move", id, got)
	}
}
