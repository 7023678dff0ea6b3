package broker

import (
	"slices"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// TestResendLeavesOutNewerSubs: a persistent publisher's QoS 2 resend,
// routed again under its Origin, goes to the subscriptions the first
// routing here missed that were made before it, and not to those made
// after: MQTT owes the message to the subscriptions that match when the
// server receives it, and a clean session that subscribed in between got
// the publisher's next message first, so the resend reached it after
// that one (test/jepsen TestClusterFull short faults, seed 3059: pub0's
// #39 first routed on n2, clean cs0 and cs1 subscribed there, #40
// reached them, then #39's DUP resend; [MQTT-4.6.0-5]). The order is
// forced: the first routing is not confirmed, "late" subscribes, the
// publisher sends its next message, then the resend.
func TestResendLeavesOutNewerSubs(t *testing.T) {
	t.Parallel()
	st := &idLog{}
	cl := &originCluster{store: st}
	srv, addr := startServer(t, Options{Store: st, Cluster: cl})
	early := dial(t, addr, packet.V5)
	early.Connect(&packet.Connect{ClientID: "early", CleanStart: true})
	early.Subscribe("t", 2)

	pub := dial(t, addr, packet.V5)
	pub.Connect(&packet.Connect{ClientID: "pub", CleanStart: true, Properties: persist})
	cl.fail.Store(true)
	pub.Send(&packet.Publish{Topic: "t", QoS: 2, PacketID: 2, Payload: []byte("m1")})
	expectUnknownClose(t, pub, packet.V5)
	cl.fail.Store(false)

	late := dial(t, addr, packet.V5)
	late.Connect(&packet.Connect{ClientID: "late", CleanStart: true})
	late.Subscribe("t", 2)
	// A resubscription keeps the mark of the subscription it replaces
	// [MQTT-3.8.4-3].
	re := dial(t, addr, packet.V5)
	re.Connect(&packet.Connect{ClientID: "re", CleanStart: true})
	re.Subscribe("x", 2)
	made := func() uint64 {
		srv.mu.Lock()
		ss := srv.sessions["re"]
		srv.mu.Unlock()
		ss.mu.Lock()
		defer ss.mu.Unlock()
		return ss.subs["x"].made
	}
	before := made()
	re.Subscribe("x", 1)
	if after := made(); before == 0 || after != before {
		t.Errorf("subscription made %d, %d after resubscribing; want the same, not 0", before, after)
	}

	pub = dial(t, addr, packet.V5)
	pub.Connect(&packet.Connect{ClientID: "pub", Properties: persist})
	exchangeQoS2(t, pub, 3, "m2", false)
	exchangeQoS2(t, pub, 2, "m1", true)

	if got := payloads(t, early); !slices.Equal(got, []string{"m1", "m2"}) {
		t.Errorf("early got %q, want m1 then m2, once each", got)
	}
	if got := payloads(t, late); !slices.Equal(got, []string{"m2"}) {
		t.Errorf("late got %q, want m2 only: m1's resend reached a subscription made after its first routing, after m2", got)
	}
}

// TestResendLeavesOutNewerSubsRemote: DeliverRemote does the same for a
// resend forwarded here (RemoteMessage.Resent) whose first routing
// reached this node; a session handed over after it (Adopt) keeps its
// place: it may have missed the first routing on its old node.
func TestResendLeavesOutNewerSubsRemote(t *testing.T) {
	t.Parallel()
	st := &idLog{}
	srv, addr := startServer(t, Options{Store: st, Cluster: &originCluster{store: st}})
	early := dial(t, addr, packet.V5)
	early.Connect(&packet.Connect{ClientID: "early", CleanStart: true})
	early.Subscribe("t", 2)
	o := Origin{ClientID: "pub", PacketID: 7, Nonce: 99}
	srv.DeliverRemote(&RemoteMessage{Topic: "t", QoS: 2, Payload: []byte("m1"), Origin: o})

	late := dial(t, addr, packet.V5)
	late.Connect(&packet.Connect{ClientID: "late", CleanStart: true})
	late.Subscribe("t", 2)
	srv.Adopt(&StoredSession{ClientID: "moved", Expiry: 600,
		Subs: []StoredSub{{Filter: "t", Opts: packet.SubOptions{QoS: 2}}}})
	srv.DeliverRemote(&RemoteMessage{Topic: "t", QoS: 2, Payload: []byte("m2")})
	srv.DeliverRemote(&RemoteMessage{Topic: "t", QoS: 2, Payload: []byte("m1"), Origin: o, Resent: true})

	if got := payloads(t, early); !slices.Equal(got, []string{"m1", "m2"}) {
		t.Errorf("early got %q, want m1 then m2, once each", got)
	}
	if got := payloads(t, late); !slices.Equal(got, []string{"m2"}) {
		t.Errorf("late got %q, want m2 only", got)
	}
	srv.mu.Lock()
	ss := srv.sessions["moved"]
	srv.mu.Unlock()
	ss.mu.Lock()
	var queued []string
	for _, ob := range ss.queue {
		queued = append(queued, string(ob.msg.Payload))
	}
	ss.mu.Unlock()
	if !slices.Equal(queued, []string{"m2", "m1"}) {
		t.Errorf("moved-in session queued %q, want m2 and the resend m1", queued)
	}
}

// exchangeQoS2 publishes payload to "t" at QoS 2 under pid (dup for a
// resend) and completes the exchange.
func exchangeQoS2(t *testing.T, pub *mqtttest.Client, pid uint16, payload string, dup bool) {
	t.Helper()
	pub.Send(&packet.Publish{Topic: "t", QoS: 2, PacketID: pid, Dup: dup, Payload: []byte(payload)})
	if a, ok := pub.Next(5 * time.Second).(*packet.Pubrec); !ok || a.PacketID != pid || a.ReasonCode != packet.Success {
		t.Fatalf("PUBLISH %d: got %+v, want PUBREC 0x00", pid, a)
	}
	pub.Send(&packet.Pubrel{PacketID: pid})
	if a, ok := pub.Next(5 * time.Second).(*packet.Pubcomp); !ok || a.PacketID != pid {
		t.Fatalf("PUBREL %d: got %+v, want PUBCOMP", pid, a)
	}
}

// payloads reads sub until a QoS 0 marker it publishes itself comes
// back and returns the payloads before it, in order, completing each QoS
// 1 and 2 delivery's exchange.
func payloads(t *testing.T, sub *mqtttest.Client) []string {
	t.Helper()
	sub.Send(&packet.Publish{Topic: "t", Payload: []byte("marker")})
	var got []string
	for {
		p, err := sub.Read(5 * time.Second)
		if err != nil {
			t.Fatalf("marker not received (got %q): %v", got, err)
		}
		switch m := p.(type) {
		case *packet.Publish:
			acknowledge(sub, m)
			if string(m.Payload) == "marker" {
				return got
			}
			got = append(got, string(m.Payload))
		case *packet.Pubrel:
			sub.Send(&packet.Pubcomp{PacketID: m.PacketID})
		}
	}
}
