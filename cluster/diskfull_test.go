package cluster_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"github.com/roost-mqtt/roost/internal/clustertest"
	"github.com/roost-mqtt/roost/internal/diskfull"
)

// TestClusterDiskFull fills the disk of one node of three (its store and
// its JetStream replicas on a small tmpfs) with clients on every node, then
// frees it.
func TestClusterDiskFull(t *testing.T) {
	t.Parallel() // see harness_test.go
	mnt := diskfull.Tmpfs(t, "48m")
	// A small disk needs a small ballast and free-space floor (the
	// defaults, 64 MiB and 256 MiB, are for real disks).
	cfg := filepath.Join(t.TempDir(), "roost.yaml")
	if err := os.WriteFile(cfg, []byte("store:\n  min_free: 4MiB\n  ballast: 1MiB\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tc := harness.WrapCluster(t, clustertest.Start(t, clustertest.Options{Nodes: 3, Args: []string{"--config", cfg},
		Data: func(name string) string {
			if name == "n3" {
				return filepath.Join(mnt, name)
			}
			return ""
		}}))
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	subs := []*harness.Client{harness.Connect(t, n1, "full-sub1"), harness.Connect(t, n2, "full-sub2"), harness.Connect(t, n3, "full-sub3")}
	for _, s := range subs {
		s.Sub(t, paho.SubscribeOptions{Topic: "full/#", QoS: 1})
	}
	pub1 := harness.Connect(t, n1, "full-pub1")
	pub3 := harness.Connect(t, n3, "full-pub3")
	for _, p := range []*harness.Client{pub1, pub3} {
		harness.Eventually(t, harness.Wait, func() error {
			p.Pub(t, &paho.Publish{Topic: "full/probe", QoS: 1, Payload: []byte("probe")})
			for _, s := range subs {
				if !hasProbe(s) {
					return fmt.Errorf("%s's probe did not reach %s yet", p.ID, s.ID)
				}
			}
			return nil
		})
	}

	filler := filepath.Join(mnt, "filler")
	diskfull.Fill(t, filler)

	t.Run("FullNodeRefusesQoS12", func(t *testing.T) {
		// Its store refuses new QoS 1/2 messages: 0x97 Quota exceeded.
		harness.Eventually(t, harness.PartitionBound, func() error {
			// The first publish after the fill may find the disk full
			// before the store's check (every 100 ms) notices: it is
			// routed, and answered 0x97 (as on a single node).
			rc, closed := pub3.TryPublish(t, &paho.Publish{Topic: "full/n3", QoS: 1, Payload: []byte("refused")})
			if closed {
				eventuallyAssigned(t, n3, &pub3)
				return fmt.Errorf("connection closed")
			}
			if rc != 0x97 {
				return fmt.Errorf("QoS 1 publish on the full node: 0x%02X, want 0x97", rc)
			}
			return nil
		})
		// Once the store has noticed, a refused publish is not routed:
		// no subscriber gets it.
		if rc := pub3.Pub(t, &paho.Publish{Topic: "full/n3", QoS: 1, Payload: []byte("refused-again")}); rc != 0x97 {
			t.Errorf("second QoS 1 publish on the full node: 0x%02X, want 0x97", rc)
		}
		for _, s := range subs {
			for len(s.In) > 0 {
				if p := <-s.In; string(p.Payload) == "refused-again" {
					t.Errorf("%s got a publish refused with 0x97", s.ID)
				}
			}
		}
		expiry := uint32(600)
		// 0x97, or closed without a CONNACK if the node cannot record
		// the client id's owner either.
		_, ack, err := harness.TryConnect(t, n3, &paho.Connect{ClientID: "full-persistent", CleanStart: true, KeepAlive: 30,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
		switch {
		case err != nil:
			t.Logf("persistent CONNECT on the full node: closed without CONNACK (%v)", err)
		case ack.ReasonCode != 0x97:
			t.Errorf("persistent session on the full node: CONNACK 0x%02X, want 0x97 (or none)", ack.ReasonCode)
		default:
			t.Logf("persistent CONNECT on the full node: 0x%02X", ack.ReasonCode)
		}
	})

	t.Run("OthersGoOn", func(t *testing.T) {
		// Messages from the other nodes reach every subscriber, the full
		// node's (a clean session needs no store) included.
		// (The publish that found the disk full before the store's check
		// noticed was routed, and answered 0x97: FullNodeRefusesQoS12
		// drained it.)
		for i, qos := range []byte{0, 1, 2} {
			payload := fmt.Sprint("m", i)
			rc := pub1.Pub(t, &paho.Publish{Topic: "full/x", QoS: qos, Payload: []byte(payload)})
			if rc != 0 {
				t.Fatalf("QoS %d publish on n1: 0x%02X", qos, rc)
			}
			for _, s := range subs {
				if got := s.Next(t, harness.Wait); string(got.Payload) != payload {
					t.Fatalf("%s got %q, want %q", s.ID, got.Payload, payload)
				}
			}
		}
		var c *harness.Client
		harness.Eventually(t, harness.PartitionBound, func() error { return harness.Redial(t, n2, "full-new2", &c) })
		harness.Eventually(t, harness.PartitionBound, func() error {
			rc, closed := pub1.TryPublish(t, &paho.Publish{Topic: "full/kept", QoS: 1, Retain: true, Payload: []byte("k")})
			if closed {
				harness.Redial(t, n1, "full-pub1", &pub1)
				return fmt.Errorf("retained publish: connection closed")
			}
			if rc != 0 {
				return fmt.Errorf("retained publish on n1 with n3's disk full: 0x%02X", rc)
			}
			return nil
		})
		for _, s := range subs {
			s.Next(t, harness.Wait) // the retained message, delivered live
		}
	})

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}

	t.Run("FreedNodeRecovers", func(t *testing.T) {
		harness.Eventually(t, harness.PartitionBound, func() error {
			rc, closed := pub3.TryPublish(t, &paho.Publish{Topic: "full/n3", QoS: 1, Payload: []byte("accepted")})
			if closed {
				eventuallyAssigned(t, n3, &pub3)
				return fmt.Errorf("connection closed")
			}
			if rc != 0 {
				return fmt.Errorf("QoS 1 publish on the freed node: 0x%02X", rc)
			}
			return nil
		})
		for _, s := range subs {
			for {
				if got := s.Next(t, harness.Wait); string(got.Payload) == "accepted" {
					break
				}
			}
		}
		harness.Eventually(t, harness.PartitionBound, func() error {
			got, err := clustertest.ReadRetained(t, n3.MQTT, "full-ret3", "full/kept", 300*time.Millisecond)
			if err != nil {
				return err
			}
			if !slices.Equal(got, []string{"full/kept=k"}) {
				return fmt.Errorf("retained on the freed node: %q", got)
			}
			return nil
		})
		var c *harness.Client
		harness.Eventually(t, harness.PartitionBound, func() error { return harness.Redial(t, n3, "full-new3", &c) })
	})
}
