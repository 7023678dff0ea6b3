package cluster_test

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestClusterFencesPausedOwner: clients with wills and persistent sessions
// are connected to n1, n1 is paused (SIGSTOP) and the clients connect to n2
// with the same ids. The takeover completes within a bound although n1
// does not answer: n2 reads the sessions from the cluster (Session
// Present). When n1 resumes it sees the new owner records and lets go: its
// connections get DISCONNECT 0x8E [MQTT-3.1.4-3]. The will without delay
// is published once (a takeover publishes it [MQTT-3.1.3-9]); the delayed
// one is not, since the session went on within the delay; and the
// sessions on n2 stand.
func TestClusterFencesPausedOwner(t *testing.T) {
	t.Parallel() // see harness_test.go
	tc := harness.StartCluster(t, 3)
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	wills := harness.Connect(t, n3, "fence-wills")
	wills.Sub(t, paho.SubscribeOptions{Topic: "fence/will/+", QoS: 1})

	expiry := uint32(300)
	cases := []struct {
		id    string
		delay uint32
	}{{"fence-now", 0}, {"fence-later", 2}}
	old := map[string]*harness.Client{}
	for _, tt := range cases {
		cp := &paho.Connect{ClientID: tt.id, KeepAlive: 30, CleanStart: true,
			Properties:     &paho.ConnectProperties{SessionExpiryInterval: &expiry},
			WillMessage:    &paho.WillMessage{Topic: "fence/will/" + tt.id, QoS: 1, Payload: []byte(tt.id)},
			WillProperties: &paho.WillProperties{WillDelayInterval: &tt.delay}}
		c, ack := harness.ConnectWith(t, n1, cp)
		if ack.ReasonCode != 0 {
			t.Fatalf("%s: CONNACK 0x%02X", tt.id, ack.ReasonCode)
		}
		c.Sub(t, paho.SubscribeOptions{Topic: "fence/t", QoS: 1})
		old[tt.id] = c
	}
	probe := harness.Connect(t, n3, "fence-probe")
	probe.AwaitInterest(t, "fence/t")

	tc.Kill(n1, syscall.SIGSTOP)
	fresh := map[string]*harness.Client{}
	for _, tt := range cases {
		start := time.Now()
		// The first connect may be closed without a CONNACK while the ownership
		// records elect a leader, if n1 led them.
		harness.Eventually(t, 30*time.Second, func() error {
			c, ack, err := harness.TryConnect(t, n2, &paho.Connect{ClientID: tt.id, KeepAlive: 30, CleanStart: false,
				Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
			if err != nil {
				return err
			}
			if ack.ReasonCode != 0 {
				return fmt.Errorf("%s on n2 with n1 paused: CONNACK 0x%02X", tt.id, ack.ReasonCode)
			}
			if !ack.SessionPresent {
				t.Errorf("%s on n2 with n1 paused: Session Present 0, want the replicated session", tt.id)
			}
			fresh[tt.id] = c
			return nil
		})
		t.Logf("%s: takeover with the old owner paused took %v", tt.id, time.Since(start))
	}

	tc.Kill(n1, syscall.SIGCONT)
	for _, tt := range cases {
		select {
		case <-old[tt.id].Done():
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: the resumed node kept its stale connection", tt.id)
		}
		select {
		case d := <-old[tt.id].Dis:
			if d.ReasonCode != 0x8E {
				t.Errorf("%s on the resumed node: DISCONNECT 0x%02X, want 0x8E Session taken over", tt.id, d.ReasonCode)
			}
		case <-time.After(5 * time.Second): // paho reports it after closing
			t.Errorf("%s on the resumed node: closed without DISCONNECT 0x8E", tt.id)
		}
	}
	got := map[string]int{}
	harness.Eventually(t, 20*time.Second, func() error {
		for len(wills.In) > 0 {
			got[string((<-wills.In).Payload)]++
		}
		if got["fence-now"] == 0 {
			return fmt.Errorf("wills so far: %v", got)
		}
		return nil
	})
	// n1 logs the end of each session it held for these ids; no will may
	// follow, and the delayed one's delay is over by then.
	tc.WaitLog(n1, "session ended: its client id is owned by another node", len(cases), 20*time.Second)
	wills.None(t, 2*time.Second)
	for len(wills.In) > 0 {
		got[string((<-wills.In).Payload)]++
	}
	if got["fence-now"] != 1 || got["fence-later"] != 0 {
		t.Errorf("wills published: %v; want fence-now's once, fence-later's never; logs:\nn1:\n%s\nn2:\n%s", got,
			harness.GrepLog(n1, "fence-", "cluster:"), harness.GrepLog(n2, "fence-", "cluster:"))
	}

	// The sessions on n2 are the ones that stand: a message published on
	// n3 reaches them, and nothing reaches n1 for the ids.
	probe.AwaitInterest(t, "fence/t")
	if rc := probe.Pub(t, &paho.Publish{Topic: "fence/t", QoS: 1, Payload: []byte("after")}); rc != 0 {
		t.Fatalf("publish after the fence: PUBACK 0x%02X", rc)
	}
	for _, tt := range cases {
		if p := fresh[tt.id].Next(t, harness.Wait); string(p.Payload) != "after" {
			t.Fatalf("%s on n2 got %q", tt.id, p.Payload)
		}
	}
}
