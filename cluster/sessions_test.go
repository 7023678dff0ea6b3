package cluster_test

import (
	"fmt"
	"os"
	"strings"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// TestClusterSessionSurvivesKill: a persistent subscriber's session lives
// on n1, offline; a publisher on n2 sends QoS 1 and QoS 2 messages, each
// acknowledged; n1 is killed (kill -9); the subscriber reconnects to n3 and
// finds its session there (Session Present), read from the cluster's
// replicated record: its subscriptions, and every acknowledged message, the
// QoS 2 ones exactly once.
func TestClusterSessionSurvivesKill(t *testing.T) {
	tc := startCluster(t, 3)
	n1, n2, n3 := tc.nodes[0], tc.nodes[1], tc.nodes[2]
	expiry := uint32(600)
	const id = "keep-sub"
	sub, ack := connectWith(t, n1, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
	if ack.ReasonCode != 0 {
		t.Fatalf("CONNACK 0x%02X", ack.ReasonCode)
	}
	sub.subscribe(t, paho.SubscribeOptions{Topic: "keep/q1", QoS: 1}, paho.SubscribeOptions{Topic: "keep/q2", QoS: 2})
	pub := connect(t, n2, "keep-pub")
	pub.awaitInterest(t, "keep/q1")
	pub.awaitInterest(t, "keep/q2")
	sub.Disconnect(&paho.Disconnect{}) // the session stays on n1, offline
	tc.waitLog(n1, `client_id=keep-sub reason="client disconnected normally"`, 1, wait)

	const each = 20
	var want []string
	for i := range each {
		for _, qos := range []byte{1, 2} {
			p := fmt.Sprintf("q%d-%d", qos, i)
			if rc := pub.publish(t, &paho.Publish{Topic: fmt.Sprintf("keep/q%d", qos), QoS: qos, Payload: []byte(p)}); rc != 0 {
				t.Fatalf("publish %s: reason 0x%02X", p, rc)
			}
			want = append(want, p)
		}
	}

	tc.kill(n1, syscall.SIGKILL)
	var back *client
	start := time.Now()
	eventually(t, 30*time.Second, func() error {
		c, ack, err := tryConnect(t, n3, &paho.Connect{ClientID: id, CleanStart: false, KeepAlive: 30,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
		if err != nil {
			return err
		}
		if ack.ReasonCode != 0 {
			return fmt.Errorf("CONNACK 0x%02X", ack.ReasonCode)
		}
		if !ack.SessionPresent {
			t.Fatalf("reconnected to n3 after n1 was killed: Session Present 0; n3's log on the session:\n%s",
				grepLog(n3, "keep-sub", "session", "cluster:"))
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
		case p := <-back.in:
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
	back.none(t, time.Second) // no QoS 2 duplicate trails behind
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
	pub.awaitInterest(t, "keep/q2")
	if rc := pub.publish(t, &paho.Publish{Topic: "keep/q2", QoS: 2, Payload: []byte("after")}); rc != 0 {
		t.Fatalf("publish after failover: 0x%02X", rc)
	}
	if p := back.next(t, wait); string(p.Payload) != "after" {
		t.Fatalf("got %q after failover", p.Payload)
	}
}

// grepLog returns the lines of nd's log that contain any of words, for a
// failure message (the harness prints only the last lines).
func grepLog(nd *node, words ...string) string {
	b, _ := os.ReadFile(nd.logPath)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		for _, w := range words {
			if strings.Contains(l, w) && !strings.Contains(l, "component=nats") {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
