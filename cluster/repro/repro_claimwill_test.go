package repro_test

import (
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"github.com/roost-mqtt/roost/packet"
)

// TestReproClaimKilledBeforeAdoption: found by test/jepsen TestClusterFull
// (b41r3), where g1m1's session was lost. n1 claimed a client id whose
// session lived on n2; n2 answered (it handed the session over), and n1
// was killed 0.1 s later, before the session was in its server. At n1's
// restart the client connected to n1 again: the owner record named n1
// itself, so the claim took the id as n1's and read nothing, and the
// client started afresh (Session Present 0, its subscriptions and queued
// messages gone). A record naming a node that this process did not write
// (its previous incarnation's), with no session here, must be taken as a
// claim from another node is: the session read from the stream.
//
// adopt-stall holds n1's claims, once answered, until the kill; one kill
// covers three clients: one resuming its session, one connecting with
// Clean Start, and a clean session with a will (wills of clean sessions
// ride in the owner record, cleanwill.go): the will of the connection
// the claim took over must not die with the claimer.
func TestReproClaimKilledBeforeAdoption(t *testing.T) {
	t.Parallel() // see harness.Main
	const sub, clean, willer = "cw-sub", "cw-clean", "cw-will"
	// No survivor adopts n1's records while it is down (that reads the
	// stream, and hides the fault): n1 must take them itself.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "adopt-stall=" + sub + "@n1,adopt-stall=" + clean + "@n1,adopt-stall=" + willer + "@n1", Config: "cluster:\n  adopt_after: 60s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	queuedOffline(t, tc, n2, n3, sub, "cw/s")
	queuedOffline(t, tc, n2, n3, clean, "cw/c")

	// The clean session with will A lives on n2, connected; its
	// watcher is on n3, and n1 has seen its interest.
	watcher := harness.Connect(t, n3, "cw-watch")
	watcher.Sub(t, paho.SubscribeOptions{Topic: "cw/will", QoS: 1})
	harness.Connect(t, n1, "cw-probe").AwaitInterest(t, "cw/will")
	if _, ack := harness.ConnectWith(t, n2, &paho.Connect{ClientID: willer, CleanStart: true, KeepAlive: 30,
		WillMessage: &paho.WillMessage{Topic: "cw/will", QoS: 1, Payload: []byte("A")}}); ack.ReasonCode != 0 {
		t.Fatalf("%s: CONNACK 0x%02X", willer, ack.ReasonCode)
	}

	// The three CONNECTs on n1, each with a will of its own (B): n2
	// answers each claim, and n1 stalls before it takes the session.
	for _, id := range []string{sub, clean, willer} {
		c := &packet.Connect{ProtocolVersion: packet.V5, ClientID: id, KeepAlive: 30,
			WillFlag: true, WillQoS: 1, WillTopic: "cw/will", WillPayload: []byte("B-" + id)}
		if id != willer {
			c.Properties.SessionExpiry = harness.QueuedExpiry
			c.Properties.Set(packet.PropSessionExpiry)
		}
		claimStalled(t, tc, n1, c)
	}
	tc.Kill(n1, syscall.SIGKILL)
	n1.Env = nil // the restarted n1 takes its claims at once
	tc.Start(n1)

	t.Run("resume", func(t *testing.T) {
		back := resumeQueued(t, n1, sub, "resumed on n1 after its claim there was killed before the adoption", n1, n2)
		pub := harness.Connect(t, n3, "cw-pub")
		pub.AwaitInterest(t, "cw/s")
		if rc := pub.Pub(t, &paho.Publish{Topic: "cw/s", QoS: 1, Payload: []byte("after")}); rc != 0 {
			t.Fatalf("publish after the restart: PUBACK 0x%02X", rc)
		}
		if p := back.Next(t, 30*time.Second); string(p.Payload) != "after" {
			t.Fatalf("%s got %q, want the message published after it resumed (its subscription)", sub, p.Payload)
		}
	})
	t.Run("will", func(t *testing.T) {
		// n1 has the watcher's interest again before the client's claim
		// there publishes the will it replaces.
		harness.Connect(t, n1, "cw-probe2").AwaitInterest(t, "cw/will")
		c, ack := harness.ConnectWith(t, n1, &paho.Connect{ClientID: willer, CleanStart: true, KeepAlive: 30,
			WillMessage: &paho.WillMessage{Topic: "cw/will", QoS: 1, Payload: []byte("C")}})
		if ack.ReasonCode != 0 {
			t.Fatalf("%s on restarted n1: CONNACK 0x%02X", willer, ack.ReasonCode)
		}
		c.Disconnect(&paho.Disconnect{}) // C is dropped
		// A: the connection n1's first claim took over on n2, whose
		// will that claim published before it stalled (after the
		// adoption, as before, the kill lost it). Then B, the will of
		// the CONNECT the kill ended, which n1's previous process
		// recorded: the claim of the client back on n1 replaces that
		// record and publishes it, as n1's startup scan would have
		// (TestClusterRestartedNodeCleanWills; before December 6, 2026
		// it was dropped). Each once.
		for _, want := range []string{"A", "B-" + willer} {
			if p := watcher.Next(t, 30*time.Second); string(p.Payload) != want {
				t.Fatalf("will %q published, want %s; n1:\n%s", p.Payload, want, harness.GrepLog(n1, willer))
			}
		}
		watcher.None(t, 3*time.Second)
	})
	t.Run("clean", func(t *testing.T) {
		expiry := uint32(harness.QueuedExpiry)
		// A CONNECT may be closed without CONNACK while a stream elects
		// a leader after the restart: the client tries again.
		var c *harness.Client
		harness.Eventually(t, 60*time.Second, func() error {
			cc, ack, err := harness.TryConnect(t, n1, &paho.Connect{ClientID: clean, CleanStart: true, KeepAlive: 30,
				Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
			switch {
			case err != nil:
				return err
			case ack.ReasonCode != 0:
				return fmt.Errorf("CONNACK 0x%02X", ack.ReasonCode)
			case ack.SessionPresent:
				t.Fatalf("%s with Clean Start on restarted n1: Session Present 1", clean)
			}
			c = cc
			return nil
		})
		c.Sub(t, paho.SubscribeOptions{Topic: "cw/c2", QoS: 1})
		c.Disconnect(&paho.Disconnect{})
		tc.WaitLog(n1, "client_id="+clean+` reason="client disconnected normally"`, 1, harness.Wait)
		back := harness.Resume(t, n3, clean, expiry, 60*time.Second)
		pub := harness.Connect(t, n3, "cw-pub2")
		pub.AwaitInterest(t, "cw/c2")
		if rc := pub.Pub(t, &paho.Publish{Topic: "cw/c2", QoS: 1, Payload: []byte("marker")}); rc != 0 {
			t.Fatalf("publish: PUBACK 0x%02X", rc)
		}
		// The session Clean Start made, not the one it discarded: the
		// old queued message would come first.
		if p := back.Next(t, 30*time.Second); string(p.Payload) != "marker" {
			t.Fatalf("%s resumed after Clean Start got %q first, want only what its new session subscribed to", clean, p.Payload)
		}
	})
}

// claimStalled sends c to nd over a bare socket (left open) until nd's
// claim of its client id stalls before it takes the session (the
// adopt-stall fault): an attempt may first be refused while a stream
// elects a leader.
func claimStalled(t *testing.T, tc *harness.Cluster, nd *harness.Node, c *packet.Connect) {
	t.Helper()
	b, err := c.Encode(nil, packet.V5)
	if err != nil {
		t.Fatal(err)
	}
	stalled := `"cluster: test fault: the claim stalls before it takes the session" node=` + nd.Name + ` client_id=` + c.ClientID
	harness.Eventually(t, 60*time.Second, func() error {
		nc, err := net.DialTimeout("tcp", nd.MQTT, harness.Wait)
		if err != nil {
			return err
		}
		t.Cleanup(func() { nc.Close() })
		nc.Write(b)
		// Longer than a claim's bound (forward_timeout) with its
		// release wait.
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
			if harness.CountLog(nd, stalled) > 0 {
				return nil
			}
			time.Sleep(50 * time.Millisecond)
		}
		return fmt.Errorf("%s: no stalled claim on %s yet", c.ClientID, nd.Name)
	})
}
