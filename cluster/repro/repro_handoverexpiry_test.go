package repro_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestReproHandoverExpiryClaimedAgain: n1 hands he-sub's session over to
// n2's claim, which never confirms it (adopt-stall: the claim waits
// after the answer), and the client's next CONNECT claims the id back on
// n1 (its claim stalls too). n1's handover then expires: before, the
// copy ended there, and its OpSessionDel, appended under n1's newer
// claim, went to the stream as the session's newest op, so the next
// claimer (n3) read an ended session: Session Present 0, every queued
// message lost (test/jepsen TestClusterFull short faults, seeds 438 and
// 461: `SessDel e6` and `SessDel e3`; bench/jepsen/RESULTS.md, "runs25").
func TestReproHandoverExpiryClaimedAgain(t *testing.T) {
	t.Parallel() // see harness.Main
	const id = "he-sub"
	tc := harness.StartClusterFault(t, 3, "adopt-stall="+id+"@n1,seal-late="+id+"@n2")
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	sub := harness.NewPersistent(t, n1, id, paho.SubscribeOptions{Topic: "he/#", QoS: 1})
	pub := harness.Connect(t, n1, "he-pub")
	pub.AwaitInterest(t, "he/probe")
	sub.Disconnect(&paho.Disconnect{})
	tc.WaitLog(n1, "client_id="+id+` reason="client disconnected normally"`, 1, harness.Wait)
	owed := harness.PublishOwed(t, n1, "he-pub", &pub, "he/t", "m", 5)

	expiry := uint32(harness.QueuedExpiry)
	connect := &paho.Connect{ClientID: id, CleanStart: false, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}
	go func() { _, _, _ = harness.TryConnect(t, n2, connect) }()
	tc.WaitLog(n2, `"cluster: test fault: the move's adoption, begun, waits until the node stops" node=n2 client_id=`+id, 1, harness.Wait)
	go func() { _, _, _ = harness.TryConnect(t, n1, connect) }()
	tc.WaitLog(n1, `"cluster: test fault: the claim stalls before it takes the session" node=n1 client_id=`+id, 1, harness.Wait)
	// n1's handover to n2 expires: the copy ended (before) or left to
	// n1's claim.
	const ended, left = `"session ended: its client id is owned by another node" client_id=` + id,
		`"cluster: a handover unconfirmed by its claim, the id claimed here again since: the copy left to that claim" node=n1 client_id=` + id
	harness.Eventually(t, 40*time.Second, func() error {
		if harness.CountLog(n1, ended)+harness.CountLog(n1, left) == 0 {
			return fmt.Errorf("n1's handover of %s to n2 not expired yet", id)
		}
		return nil
	})
	t.Logf("path: n1's copy ended %d, left to its claim %d", harness.CountLog(n1, ended), harness.CountLog(n1, left))
	time.Sleep(2 * time.Second) // the end's op, if any, lands before the next claim reads

	var c *harness.Client
	harness.Eventually(t, 60*time.Second, func() error {
		cc, ack, err := harness.TryConnect(t, n3, connect)
		if err != nil {
			return err
		}
		if ack.ReasonCode != 0 {
			cc.Disconnect(&paho.Disconnect{})
			return fmt.Errorf("%s on n3: CONNACK 0x%02X", id, ack.ReasonCode)
		}
		if !ack.SessionPresent {
			t.Fatalf("%s on n3: Session Present 0, its session lost\nn1:\n%s\nn3:\n%s", id,
				harness.GrepLog(n1, "client_id="+id), harness.GrepLog(n3, "client_id="+id))
		}
		c = cc
		return nil
	})
	got, lost := harness.ReceiveAll(c, owed, 20*time.Second)
	if len(lost) > 0 {
		t.Fatalf("%s lost %d of %d acknowledged messages: %v (got %v)", id, len(lost), len(owed), lost, got)
	}
}
