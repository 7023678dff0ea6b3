package cluster_test

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"github.com/roost-mqtt/roost/internal/clustertest"
	"github.com/roost-mqtt/roost/internal/netfault"
)

// TestClusterRejectingCutIsSafe: a firewall that rejects (TCP resets,
// ICMP) between n3 and the others closes their routes at once, so to them
// n3 looks killed, not cut off: it is dropped at once, and after
// adopt_after of silence a survivor adopts the persistent session of a
// client that is in fact still connected to n3. (adopt_after is 3 s here,
// as in TestClusterCutOffCleanWillOnce: the default 10 s was 7 s of the
// test's wall spent waiting, and how long the silence lasts is not what
// the test asks.) The cluster cannot tell the two apart from
// inside, so it must be safe either way, and this shows it is:
//
//   - n3 alone has no quorum: a QoS 1 publish queued there for the
//     persistent session is not acknowledged as kept (PUBACK 0x80);
//   - the adopter publishes the session's will once, and n3 never does;
//   - what the majority acknowledged for the session meanwhile is queued
//     there, and reaches the client when it reconnects on the majority
//     after the heal (Session Present);
//   - after the heal n3 sees the newer owner record and takes its stale
//     connection over (DISCONNECT 0x8E): one connection per client id.
func TestClusterRejectingCutIsSafe(t *testing.T) {
	t.Parallel() // see harness_test.go
	nf := netfault.Namespace(t, clustertest.BinEnv+"="+clustertest.Binary(t, false))
	if nf == nil {
		return
	}
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Config: "cluster:\n  adopt_after: 3s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	wills := harness.Connect(t, n2, "rj-wills")
	wills.Sub(t, paho.SubscribeOptions{Topic: "rj/will", QoS: 1})
	expiry := uint32(600)
	roamer, ack := harness.ConnectWith(t, n3, &paho.Connect{ClientID: "rj-roamer", CleanStart: true, KeepAlive: 120,
		Properties:  &paho.ConnectProperties{SessionExpiryInterval: &expiry},
		WillMessage: &paho.WillMessage{Topic: "rj/will", QoS: 1, Payload: []byte("rj-roamer")}})
	if ack.ReasonCode != 0 {
		t.Fatalf("CONNACK 0x%02X", ack.ReasonCode)
	}
	roamer.Sub(t, paho.SubscribeOptions{Topic: "rj/t", QoS: 1})
	pub1 := harness.Connect(t, n1, "rj-pub1")
	pub1.AwaitInterest(t, "rj/t")
	pub3 := harness.Connect(t, n3, "rj-pub3")

	rejectCut(t, nf, n3, n1)
	// n3 cannot replicate the session: nothing queued for it there is
	// acknowledged as kept.
	if rc, closed := pub3.TryPublish(t, &paho.Publish{Topic: "rj/t", QoS: 1, Payload: []byte("on-n3")}); !closed && rc < 0x80 {
		t.Errorf("QoS 1 publish for a persistent session on a node without quorum: PUBACK 0x%02X, want a failure code", rc)
	}
	// The majority adopts the session of the "dead" node and publishes
	// its will.
	if p := wills.Next(t, 60*time.Second); string(p.Payload) != "rj-roamer" {
		t.Fatalf("will %q, want rj-roamer's", p.Payload)
	}
	// Queued there from now on: acknowledged 0x00, not 0x10 No matching
	// subscribers.
	var acked []string
	harness.Eventually(t, harness.PartitionBound, func() error {
		if rc := pub1.Pub(t, &paho.Publish{Topic: "rj/t", QoS: 1, Payload: []byte("probe")}); rc != 0 {
			return fmt.Errorf("PUBACK 0x%02X: the session is not adopted yet", rc)
		}
		return nil
	})
	for i := range 20 {
		payload := "m" + strconv.Itoa(i)
		if rc := pub1.Pub(t, &paho.Publish{Topic: "rj/t", QoS: 1, Payload: []byte(payload)}); rc != 0 {
			t.Fatalf("publish %s for the adopted session: PUBACK 0x%02X", payload, rc)
		}
		acked = append(acked, payload)
	}

	healTakesOver(t, nf, roamer)
	back := harness.Resume(t, n1, "rj-roamer", expiry, harness.PartitionBound)
	want := map[string]bool{}
	for _, m := range acked {
		want[m] = true
	}
	for len(want) > 0 {
		delete(want, string(back.Next(t, harness.PartitionBound).Payload))
	}
	// The will came once: n3 fenced the session without it.
	wills.None(t, 2*time.Second)
	published := 0
	for _, nd := range tc.Nodes {
		published += harness.CountLog(nd, `"publishing will" client_id=rj-roamer`)
	}
	if published != 1 {
		t.Errorf("rj-roamer's will published %d times across the nodes, want 1", published)
	}
}
