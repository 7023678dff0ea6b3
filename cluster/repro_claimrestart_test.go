package cluster_test

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// TestReproClaimAfterRestart: found by test/jepsen TestClusterFull (seed
// 41, after TestReproClaimDuringTakeover's fix), where a shared group's
// persistent member got Session Present 0. A session lives on n1, offline,
// with a message queued; n1 is paused. The client connects to n3: n3
// records itself as the owner and waits for n1 to let go, and is killed
// (kill -9) before it has the session; it starts again with no session
// for the id in its own store, while the record names it. The client then
// connects to n2, which asks n3 to let go: n3 answered "nothing to hand
// over", and n2 started the client afresh on a session the cluster had.
// A node asked to let go of an id it holds no session for and did not
// claim since it started must send the claimer to the stream.
func TestReproClaimAfterRestart(t *testing.T) {
	tc := startCluster(t, 3)
	n1, n2, n3 := tc.nodes[0], tc.nodes[1], tc.nodes[2]
	expiry := uint32(600)
	const id = "restart-sub"
	cp := func(clean bool) *paho.Connect {
		return &paho.Connect{ClientID: id, CleanStart: clean, KeepAlive: 30,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}
	}
	sub, ack := connectWith(t, n1, cp(true))
	if ack.ReasonCode != 0 {
		t.Fatalf("CONNACK 0x%02X", ack.ReasonCode)
	}
	sub.subscribe(t, paho.SubscribeOptions{Topic: "restart/t", QoS: 1})
	pub := connect(t, n2, "restart-pub")
	pub.awaitInterest(t, "restart/t")
	sub.Disconnect(&paho.Disconnect{}) // the session stays on n1, offline
	tc.waitLog(n1, `client_id=restart-sub reason="client disconnected normally"`, 1, wait)
	if rc := pub.publish(t, &paho.Publish{Topic: "restart/t", QoS: 1, Payload: []byte("queued")}); rc != 0 {
		t.Fatalf("publish: PUBACK 0x%02X", rc)
	}

	tc.kill(n1, syscall.SIGSTOP)
	resumed := false
	defer func() {
		if !resumed {
			tc.kill(n1, syscall.SIGCONT)
		}
	}()
	claimOn(t, tc, n3, id, expiry)
	tc.kill(n3, syscall.SIGKILL)
	tc.kill(n1, syscall.SIGCONT)
	resumed = true
	tc.start(n3)

	var back *client
	eventually(t, 30*time.Second, func() error {
		c, ack, err := tryConnect(t, n2, cp(false))
		if err != nil {
			return err
		}
		if ack.ReasonCode != 0 {
			return fmt.Errorf("CONNACK 0x%02X", ack.ReasonCode) // a stream electing a leader: try again
		}
		if !ack.SessionPresent {
			t.Fatalf("claimed on n2 from restarted n3: Session Present 0\nn2:\n%s\nn3:\n%s", grepLog(n2, id), grepLog(n3, id))
		}
		back = c
		return nil
	})
	if p := back.next(t, 10*time.Second); string(p.Payload) != "queued" {
		t.Fatalf("the resumed session got %q, want the queued message", p.Payload)
	}
}
