package repro_test

import (
	"slices"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"github.com/roost-mqtt/roost/packet"
)

// TestReproResendNewerSub: a persistent publisher's QoS 2 resend routed
// again under its Origin must not reach a subscription made after the
// Origin's first routing on its node: MQTT owes the message to the
// subscriptions that match when the server receives it, and the new one
// got the publisher's next message first, so the resend reached it
// after that one [MQTT-4.6.0-5] (test/jepsen TestClusterFull short
// faults, seed 3059: pub0's #39 first routed on n2, clean cs0 and cs1
// subscribed there, #40 reached them, then #39's DUP resend did;
// bench/jepsen/RESULTS.md, "short31" and "ord32").
//
// rn-pub, persistent on n1, sends m1; unconfirmed fails the forward's
// confirmation (to rn-far on n2, which gets m1), so rn-pub is not
// answered. Then clean rn-late1 subscribes on n1 and rn-late2 on n2 (a
// resend forwarded there: DeliverRemote's path), rn-pub resumes on n1
// and sends m2, its DUP resend of m1 and m3. The late subscribers must
// get m2 and m3 and not m1 after m2; rn-far, subscribed before m1, gets
// m1 once, first.
func TestReproResendNewerSub(t *testing.T) {
	t.Parallel() // see harness.Main
	const prefix = "rn"
	filter, topic, id := prefix+"/+", prefix+"/x", prefix+"-pub"
	// forward_timeout 15 s: m2, the resend and m3 are confirmed at load.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "unconfirmed=" + topic + "@n1", Config: "cluster:\n  forward_timeout: 15s\n"})
	n1, n2 := tc.Nodes[0], tc.Nodes[1]
	far := harness.Connect(t, n2, prefix+"-far")
	far.Sub(t, paho.SubscribeOptions{Topic: filter, QoS: 2})
	harness.Connect(t, n1, prefix+"-probe").AwaitInterest(t, prefix+"/probe") // n1 forwards to n2
	pc, _, err := harness.RawPublisher(t, n1, id, true)
	if err != nil {
		t.Fatal(err)
	}
	m1 := &packet.Publish{QoS: 2, PacketID: 9, Topic: topic, Payload: []byte("m1")}
	if rc, closed := harness.ExchangeQoS2(t, pc, m1); !closed {
		t.Fatalf("m1 answered PUBREC 0x%02X, want the connection closed (outcome unknown): the fault did not fail its forward", byte(rc))
	}
	// m1 reached n2: its first routing there came before rn-late2's
	// subscription.
	if p := far.Next(t, 30*time.Second); string(p.Payload) != "m1" {
		t.Fatalf("%s got %q first, want m1", far.ID, p.Payload)
	}
	late1, late2 := harness.Connect(t, n1, prefix+"-late1"), harness.Connect(t, n2, prefix+"-late2")
	late1.Sub(t, paho.SubscribeOptions{Topic: filter, QoS: 2})
	late2.Sub(t, paho.SubscribeOptions{Topic: filter, QoS: 2})

	pc, ack, err := harness.RawPublisher(t, n1, id, false)
	if err != nil || !ack.SessionPresent {
		t.Fatalf("%s resumed on n1: %+v, %v; want its session", id, ack, err)
	}
	resend := *m1
	resend.Dup = true
	for i, p := range []*packet.Publish{
		{QoS: 2, PacketID: 10, Topic: topic, Payload: []byte("m2")},
		&resend,
		{QoS: 2, PacketID: 11, Topic: topic, Payload: []byte("m3")},
	} {
		if rc, closed := harness.ExchangeQoS2(t, pc, p); closed || rc >= 0x80 {
			// A forward not confirmed in 15 s: the load, not the path.
			t.Skipf("publish %d (%s): PUBREC 0x%02X, closed %v: not confirmed, the test missed its path", i, p.Payload, byte(rc), closed)
		}
	}

	logs := func() string { return harness.GrepLog(n1, id) + "\n" + harness.GrepLog(n2, id) }
	for _, c := range []*harness.Client{late1, late2, far} {
		got, order, lost := harness.ReceiveAllOrder(c, []string{"m2", "m3"}, 30*time.Second)
		if len(lost) > 0 {
			t.Fatalf("%s lost %v (got %v)\n%s", c.ID, lost, order, logs())
		}
		switch i := slices.Index(order, "m1"); {
		case c == far && i >= 0:
			t.Errorf("%s got m1 twice (%v)\n%s", c.ID, order, logs())
		case i > slices.Index(order, "m2"):
			t.Errorf("%s got %v: m1's resend after m2, to a subscription made after m1's first routing on its node\n%s", c.ID, order, logs())
		case !slices.Equal(slices.DeleteFunc(slices.Clone(order), func(s string) bool { return s == "m1" }), []string{"m2", "m3"}) || got["m2"] != 1 || got["m3"] != 1:
			t.Errorf("%s got %v (%v), want m2 and m3 once each", c.ID, order, got)
		}
	}
}
