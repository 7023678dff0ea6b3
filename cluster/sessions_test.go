package cluster_test

import (
	"fmt"
	"net"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestClusterSessionSurvivesKill: a persistent subscriber's session lives
// on n1, offline; a publisher on n2 sends QoS 1 and QoS 2 messages, each
// acknowledged; n1 is killed (kill -9); the subscriber reconnects to n3 and
// finds its session there (Session Present), read from the cluster's
// replicated record: its subscriptions, and every acknowledged message, the
// QoS 2 ones exactly once.
func TestClusterSessionSurvivesKill(t *testing.T) {
	t.Parallel() // see harness_test.go
	tc := harness.StartCluster(t, 3)
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	expiry := uint32(600)
	const id = "keep-sub"
	sub, pub := harness.PersistentPair(t, n1, n2, "keep", expiry)
	sub.Disconnect(&paho.Disconnect{}) // the session stays on n1, offline
	tc.WaitLog(n1, `client_id=keep-sub reason="client disconnected normally"`, 1, harness.Wait)

	const each = 20
	var want []string
	for i := range each {
		for _, qos := range []byte{1, 2} {
			p := fmt.Sprintf("q%d-%d", qos, i)
			if rc := pub.Pub(t, &paho.Publish{Topic: fmt.Sprintf("keep/q%d", qos), QoS: qos, Payload: []byte(p)}); rc != 0 {
				t.Fatalf("publish %s: reason 0x%02X", p, rc)
			}
			want = append(want, p)
		}
	}

	tc.Kill(n1, syscall.SIGKILL)
	var back *harness.Client
	start := time.Now()
	harness.Eventually(t, 30*time.Second, func() error {
		c, ack, err := harness.TryConnect(t, n3, &paho.Connect{ClientID: id, CleanStart: false, KeepAlive: 30,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
		if err != nil {
			return err
		}
		if ack.ReasonCode != 0 {
			return fmt.Errorf("CONNACK 0x%02X", ack.ReasonCode)
		}
		if !ack.SessionPresent {
			t.Fatalf("reconnected to n3 after n1 was killed: Session Present 0; n3's log on the session:\n%s",
				harness.GrepLog(n3, "keep-sub", "session", "cluster:"))
		}
		back = c
		return nil
	})
	t.Logf("session resumed on n3 %v after n1 was killed", time.Since(start))
	got := map[string]int{}
	var order []string
	deadline := time.After(20 * time.Second)
	for len(got) < len(want) {
		select {
		case p := <-back.In:
			if string(p.Payload) == "probe" {
				continue
			}
			if got[string(p.Payload)] == 0 {
				order = append(order, string(p.Payload))
			}
			got[string(p.Payload)]++
		case <-deadline:
			missing := slices.DeleteFunc(slices.Clone(want), func(s string) bool { return got[s] > 0 })
			t.Fatalf("after failover, %d of %d acknowledged messages missing: %v", len(missing), len(want), missing)
		}
	}
	back.None(t, time.Second) // no QoS 2 duplicate trails behind
	for p, n := range got {
		if p[1] == '2' && n != 1 {
			t.Errorf("QoS 2 message %s delivered %d times", p, n)
		}
	}
	// Per topic, in publish order.
	for _, topic := range []string{"q1", "q2"} {
		var seen []string
		for _, p := range order {
			if p[:2] == topic {
				seen = append(seen, p)
			}
		}
		for i, p := range seen {
			if p != fmt.Sprintf("%s-%d", topic, i) {
				t.Fatalf("order on keep/%s: %v", topic, seen)
			}
		}
	}
	// The subscriptions came along: a new message reaches the session.
	pub.AwaitInterest(t, "keep/q2")
	if rc := pub.Pub(t, &paho.Publish{Topic: "keep/q2", QoS: 2, Payload: []byte("after")}); rc != 0 {
		t.Fatalf("publish after failover: 0x%02X", rc)
	}
	if p := back.Next(t, harness.Wait); string(p.Payload) != "after" {
		t.Fatalf("got %q after failover", p.Payload)
	}
}

// TestClusterSessionsWithoutQuorum kills two nodes of three: the last one
// cannot replicate, so it acknowledges nothing that could be lost. A QoS 1
// or 2 publish that queues for a persistent session is not answered: its
// ops wait for replication and may yet be kept, so after
// cluster.forward_timeout the connection is closed (MQTT 5: DISCONNECT
// 0x80, outcome unknown) rather than told 0x80, and a CONNECT
// with a client id is closed without a CONNACK. When the two come back, publishes
// are acknowledged again, and the persistent subscriber gets every message
// that was acknowledged.
func TestClusterSessionsWithoutQuorum(t *testing.T) {
	t.Parallel() // see harness_test.go
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Config: "cluster:\n  forward_timeout: 1s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	expiry := uint32(600)
	persistent := &paho.Connect{ClientID: "nq-sub", CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}
	sub, ack := harness.ConnectWith(t, n1, persistent)
	if ack.ReasonCode != 0 {
		t.Fatalf("CONNACK 0x%02X", ack.ReasonCode)
	}
	sub.Sub(t, paho.SubscribeOptions{Topic: "nq/t", QoS: 2})
	sub.Disconnect(&paho.Disconnect{})
	tc.WaitLog(n1, `client_id=nq-sub reason="client disconnected normally"`, 1, harness.Wait)
	pub := harness.Connect(t, n1, "nq-pub")
	if rc := pub.Pub(t, &paho.Publish{Topic: "nq/t", QoS: 1, Payload: []byte("before")}); rc != 0 {
		t.Fatalf("publish with quorum: 0x%02X", rc)
	}
	acked := []string{"before"}

	tc.Kill(n2, syscall.SIGKILL)
	tc.Kill(n3, syscall.SIGKILL)
	for _, qos := range []byte{1, 2} {
		start := time.Now()
		rc, closed := pub.TryPublish(t, &paho.Publish{Topic: "nq/t", QoS: qos, Payload: []byte(fmt.Sprintf("lost%d", qos))})
		if !closed {
			t.Fatalf("QoS %d publish without quorum: reason 0x%02X, want no acknowledgement and the connection closed", qos, rc)
		}
		if d := time.Since(start); d > 8*time.Second {
			t.Errorf("QoS %d close took %v", qos, d)
		}
		// Without quorum only a server-assigned id connects (no
		// ownership record to write).
		harness.Eventually(t, 20*time.Second, func() error { return harness.Redial(t, n1, "", &pub) })
	}
	expectUnclaimed(t, n1, &paho.Connect{ClientID: "nq-other", CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}, 30*time.Second)

	tc.Start(n2)
	tc.Start(n3)
	harness.Eventually(t, 60*time.Second, func() error {
		rc, closed := pub.TryPublish(t, &paho.Publish{Topic: "nq/t", QoS: 2, Payload: []byte("after")})
		if closed {
			// Not confirmed yet (outcome unknown): a new connection
			// sends it again.
			harness.Redial(t, n1, "", &pub)
			return fmt.Errorf("connection closed")
		}
		if rc != 0 {
			return fmt.Errorf("publish after quorum came back: 0x%02X", rc)
		}
		return nil
	})
	acked = append(acked, "after")
	back := harness.Resume(t, n1, "nq-sub", expiry, 30*time.Second)
	got := map[string]bool{}
	harness.Eventually(t, 20*time.Second, func() error {
		for len(back.In) > 0 {
			got[string((<-back.In).Payload)] = true
		}
		for _, p := range acked {
			if !got[p] {
				return fmt.Errorf("acknowledged message %q not delivered (got %v)", p, got)
			}
		}
		return nil
	})
	// lost1/lost2 were not answered, and may be here: their ops waited
	// for the quorum (why they could not be answered 0x80).
	t.Logf("delivered to the persistent subscriber: %v", got)
}

// TestClusterInflightSurvivesKill: a QoS 2 message is inflight to a
// persistent subscriber on n1 (sent, no PUBREC: the client acknowledges
// nothing); n1 is killed; the subscriber resumes on n3 and gets it again
// with DUP and the same packet id [MQTT-4.4.0-1], from the replicated
// record (a QoS 2 PUBLISH is sent only once its packet id is replicated).
func TestClusterInflightSurvivesKill(t *testing.T) {
	t.Parallel() // see harness_test.go
	tc := harness.StartCluster(t, 3)
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	expiry := uint32(600)
	conn, err := net.DialTimeout("tcp", n1.MQTT, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	in := make(chan *paho.Publish, 10)
	silent := paho.NewClient(paho.ClientConfig{ClientID: "inflight-sub", Conn: conn, EnableManualAcknowledgment: true,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			in <- pr.Packet
			return true, nil
		}},
		OnClientError: func(error) {}})
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := contextWithTimeout(10 * time.Second)
	defer cancel()
	if ack, err := silent.Connect(ctx, &paho.Connect{ClientID: "inflight-sub", CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}); err != nil || ack.ReasonCode != 0 {
		t.Fatalf("connect: %v %v", ack, err)
	}
	if _, err := silent.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "inflight/t", QoS: 2}}}); err != nil {
		t.Fatal(err)
	}
	pub := harness.Connect(t, n2, "inflight-pub")
	pub.AwaitInterest(t, "inflight/t") // probes are inflight too: the id below is the last one
	for len(in) > 0 {
		<-in
	}
	if rc := pub.Pub(t, &paho.Publish{Topic: "inflight/t", QoS: 2, Payload: []byte("x")}); rc != 0 {
		t.Fatalf("publish: 0x%02X", rc)
	}
	var first *paho.Publish
	for first == nil || string(first.Payload) != "x" {
		select {
		case first = <-in:
		case <-time.After(harness.Wait):
			t.Fatal("the QoS 2 message did not reach the subscriber")
		}
	}

	tc.Kill(n1, syscall.SIGKILL)
	conn.Close()
	back := harness.Resume(t, n3, "inflight-sub", expiry, 30*time.Second)
	p := back.Next(t, 20*time.Second)
	if string(p.Payload) != "x" || !p.Duplicate() || p.PacketID != first.PacketID {
		t.Fatalf("after failover got %q DUP %v id %d; want %q again with DUP and id %d", p.Payload, p.Duplicate(), p.PacketID, "x", first.PacketID)
	}
	back.None(t, time.Second)
}
