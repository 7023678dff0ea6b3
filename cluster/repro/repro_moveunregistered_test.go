package repro_test

import (
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"github.com/roost-mqtt/roost/internal/clustertest"
)

// TestReproMoveUnregistered: mu-sub, offline on n1 with five QoS 1
// messages queued, is resumed on n2: n2's claim takes n1's handover (a
// live move), and the move then waits before it registers
// (register-late), as a move kept from the gate under load. Meanwhile
// the client resumes on n3, whose claim asks n2 to let go. That CONNECT
// must find the session (Session Present 1), its queued messages and its
// subscription. Before, n2's claim took the id's unread mark before its
// move registered, so the request found neither mark nor move nor
// session on n2 and was told there was nothing to hand over: n3 started
// the client afresh, Session Present 0, and the session n2's move brought
// was refused by n2's own CONNECT, overtaken (test/jepsen TestClusterFull
// short faults, seed 887: g1m0, n1's move from n2 at epoch 5, n3's claim
// at 6; 58 acknowledged g1 messages lost; bench/jepsen/RESULTS.md, sp887).
func TestReproMoveUnregistered(t *testing.T) {
	t.Parallel() // see harness.Main
	const prefix = "mu"
	id, topic := prefix+"-sub", prefix+"/x"
	tc := harness.StartClusterFault(t, 3, "register-late="+id+"@n2")
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	sub := harness.NewPersistent(t, n1, id, paho.SubscribeOptions{Topic: prefix + "/+", QoS: 1})
	sub.Disconnect(&paho.Disconnect{})
	tc.WaitLog(n1, "client_id="+id+` reason="client disconnected normally"`, 1, harness.Wait)
	pub := harness.Connect(t, n1, prefix+"-pub")
	queued := harness.PublishOwed(t, n1, prefix+"-pub", &pub, topic, "q", 5)

	// One CONNECT on n2, not retried: its claim's move is the one held.
	expiry := uint32(harness.QueuedExpiry)
	first := make(chan *paho.Connack, 1) // nil: no CONNACK
	go func() {
		c, ack, err := clustertest.Dial(t, n2.MQTT, &paho.Connect{ClientID: id, CleanStart: false, KeepAlive: 30,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
		if err == nil {
			c.Disconnect(&paho.Disconnect{})
		}
		first <- ack
	}()
	tc.WaitLog(n2, `"cluster: test fault: the move registers only once a newer claim was answered" node=n2 client_id=`+id, 1, 20*time.Second)

	// The first CONNECT on n3 is the one whose answer counts: a retry
	// after a Session Present 0 would find the fresh session.
	back, ack, err := harness.TryConnect(t, n3, &paho.Connect{ClientID: id, CleanStart: false, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
	switch {
	case err != nil: // refused without CONNACK: the client connects again
		back = harness.Resume(t, n3, id, harness.QueuedExpiry, 20*time.Second)
	case ack.ReasonCode != 0:
		back.Disconnect(&paho.Disconnect{})
		back = harness.Resume(t, n3, id, harness.QueuedExpiry, 20*time.Second)
	case !ack.SessionPresent:
		t.Fatalf("%s resumed on n3 while n2's move of it was not registered: Session Present 0\nn2:\n%s\nn3:\n%s",
			id, harness.GrepLog(n2, id), harness.GrepLog(n3, id))
	}
	if _, lost := harness.ReceiveAll(back, queued, 10*time.Second); len(lost) > 0 {
		t.Fatalf("%d of %d queued QoS 1 messages lost: %v\nn2:\n%s\nn3:\n%s", len(lost), len(queued), lost,
			harness.GrepLog(n2, id), harness.GrepLog(n3, id))
	}
	later := harness.PublishOwed(t, n1, prefix+"-pub", &pub, topic, "l", 3)
	if _, lost := harness.ReceiveAll(back, later, 10*time.Second); len(lost) > 0 {
		t.Fatalf("%d of %d QoS 1 messages after the resume lost (the subscription?): %v\nn3:\n%s", len(lost), len(later), lost,
			harness.GrepLog(n3, id))
	}
	select {
	case ack := <-first:
		if ack != nil {
			t.Fatalf("n2's CONNECT of %s, its claim overtaken by n3's before its move registered, answered: CONNACK 0x%02X, Session Present %v\nn2:\n%s",
				id, ack.ReasonCode, ack.SessionPresent, harness.GrepLog(n2, id))
		}
	case <-time.After(clustertest.ConnectBound):
		t.Fatalf("n2's CONNECT of %s not answered nor closed within %s", id, clustertest.ConnectBound)
	}
}
