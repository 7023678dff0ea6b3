package repro_test

import (
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestReproGroupClaimAbandoned: found by test/jepsen TestClusterFull (seed
// 42 on a loaded machine: 858 acknowledged messages lost for share group
// g0). Both members' sessions were on n1 when it was killed, so what the
// group matched was held for n1's group. Their clients then connected
// again and again: each claim took the session from the stream and read
// the held messages ahead, claiming them for the group (one delivery per
// group), then gave the adoption up because the client, tired of waiting
// for its CONNACK, had connected elsewhere meanwhile. The claims stood,
// the copies went with the abandoned adoption, and every later reader
// found the messages claimed: the group never got them.
//
// Here the one member of group gc lives on n1, which is killed with
// messages held for the group after it. The member's client connects to
// n2, whose claim reads the held messages ahead and then (the adopt-late
// fault) waits until the client connects to n3 and n3's claim asks n2 to
// let go: n2 gives its adoption up, n3 reads the session from the stream
// and the held subjects. Every acknowledged message must reach the member
// on n3.
func TestReproGroupClaimAbandoned(t *testing.T) {
	t.Parallel() // see harness.Main
	const id = "gc-m0"
	// No janitor adoption of n1's sessions meanwhile; room for the
	// elections after n1's kill.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "adopt-late=" + id + "@n2", Config: "cluster:\n  adopt_after: 120s\n  forward_timeout: 15s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	expiry := uint32(600)
	m, ack := harness.ConnectWith(t, n1, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
	if ack.ReasonCode != 0 {
		t.Fatalf("CONNACK 0x%02X", ack.ReasonCode)
	}
	m.Sub(t, paho.SubscribeOptions{Topic: "$share/gc/gc/#", QoS: 1})
	pub := harness.Connect(t, n3, "gc-pub")
	pub.AwaitInterest(t, "gc/t")

	tc.Kill(n1, syscall.SIGKILL)
	want := harness.PublishOwed(t, n3, "gc-pub", &pub, "gc/t", "held", 10)

	// n2's claim reads the held messages ahead, claims them for gc, and
	// waits; the client's next CONNECT, on n3, supersedes it.
	// (A claim may fail at first: the streams elect leaders after the
	// kill. The CONNECTs stay open: the client never sees a CONNACK.)
	held := `test fault: adoption held until the client id is claimed again elsewhere" node=n2 client_id=` + id
	claimUntil(t, n2, id, expiry, 90*time.Second, func() bool { return harness.CountLog(n2, held) > 0 })
	back := harness.Resume(t, n3, id, expiry, 60*time.Second)
	tc.WaitLog(n2, `session taken from the stream not adopted: its client id was claimed again meanwhile" node=n2 client_id=`+id, 1, 30*time.Second)
	if _, lost := harness.ReceiveAll(back, want, 30*time.Second); len(lost) > 0 {
		t.Fatalf("%d of %d acknowledged messages never reached the group's member: %v\nn2:\n%s\nn3:\n%s", len(lost), len(want), lost,
			harness.GrepLog(n2, id), harness.GrepLog(n3, id))
	}
}
