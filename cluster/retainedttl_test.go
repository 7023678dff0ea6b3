package cluster_test

import (
	"fmt"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"github.com/roost-mqtt/roost/internal/clustertest"
)

// TestClusterRetainedCompaction: retained messages cleared on one node are
// gone on every node, and the retained stream does not keep their
// clearings for ever: tombstones leave it after
// cluster.retained_tombstone_ttl (2 s here), and a message with a Message
// Expiry when it expires, so the stream goes back to empty. A node that
// was down meanwhile, and restarts with the cleared messages in its own
// store, clears them once it has caught up.
func TestClusterRetainedCompaction(t *testing.T) {
	t.Parallel() // see harness_test.go
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Config: "sys_interval: 1s\ncluster:\n  retained_tombstone_ttl: 2s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	const topics = 20

	pub := harness.Connect(t, n1, "ret-pub")
	for i := range topics {
		if rc := pub.Pub(t, &paho.Publish{Topic: fmt.Sprintf("ret/%d", i), QoS: 1, Retain: true, Payload: []byte("v")}); rc >= 0x80 {
			t.Fatalf("retained publish %d: 0x%02X", i, rc)
		}
	}
	expiry := uint32(2)
	pub.Pub(t, &paho.Publish{Topic: "ret/expiring", QoS: 1, Retain: true, Payload: []byte("e"),
		Properties: &paho.PublishProperties{MessageExpiry: &expiry}})
	harness.Eventually(t, 10*time.Second, func() error {
		if got := retainedOn(t, n3, "ret-check-n3", "ret/#", 300*time.Millisecond); len(got) < topics {
			return fmt.Errorf("n3 has %d retained messages, want %d", len(got), topics)
		}
		return nil
	})
	streamMsgs := func(nd *harness.Node) int {
		n, err := strconv.Atoi(sysCluster(t, nd)["retained/stream_messages"])
		if err != nil {
			return -1
		}
		return n
	}
	harness.Eventually(t, 10*time.Second, func() error {
		if got := streamMsgs(n1); got < topics {
			return fmt.Errorf("retained stream has %d messages, want at least %d", got, topics)
		}
		return nil
	})

	// n3 goes down holding every retained message in its store; n2
	// clears them all.
	tc.Kill(n3, syscall.SIGKILL)
	// If n3 led the owner records or the stream, the survivors elect a
	// new leader first: CONNECTs are closed without a CONNACK and retained
	// publishes not confirmed until then.
	var clr *harness.Client
	harness.Eventually(t, 20*time.Second, func() error { return harness.Redial(t, n2, "ret-clear", &clr) })
	for i := range topics {
		harness.Eventually(t, 20*time.Second, func() error {
			rc, closed := clr.TryPublish(t, &paho.Publish{Topic: fmt.Sprintf("ret/%d", i), QoS: 1, Retain: true})
			if closed {
				harness.Redial(t, n2, "ret-clear", &clr)
				return fmt.Errorf("clearing %d: not confirmed, connection closed", i)
			}
			if rc >= 0x80 {
				return fmt.Errorf("clearing %d: 0x%02X", i, rc)
			}
			return nil
		})
	}
	// Right after the kill n1 may refuse (0x80) a subscription that
	// reads retained messages until its consumer of the stream caught
	// up again: retried, as a client would.
	harness.Eventually(t, 20*time.Second, func() error {
		got, err := readRetainedOn(t, n1, "ret-check-n1", "ret/#", 300*time.Millisecond)
		if err != nil {
			return err
		}
		if len(got) > 0 {
			return fmt.Errorf("n1 still has %q", got)
		}
		return nil
	})
	// The tombstones and the expired message leave the stream.
	harness.Eventually(t, 20*time.Second, func() error {
		if got := streamMsgs(n1); got != 0 {
			return fmt.Errorf("retained stream has %d messages, want 0 once the tombstones expired", got)
		}
		return nil
	})

	tc.Start(n3)
	tc.WaitLog(n3, "cluster retained messages caught up", 2, 40*time.Second)
	if got := harness.CountLogAll(n3, "cleared retained messages the cluster no longer has", fmt.Sprintf("topics=%d", topics)); got != 1 {
		t.Errorf("n3 logged %d reconciliations of %d topics, want 1", got, topics)
	}
	// n3 logs that it caught up as soon as it finds the stream empty,
	// which may be before its ownership records answer (it was seen a
	// few hundred ms before its routes were back): until they do it
	// closes CONNECTs without a CONNACK, as it should.
	harness.Eventually(t, 20*time.Second, func() error {
		got, err := clustertest.ReadRetained(t, n3.MQTT, "ret-check-n3b", "ret/#", 500*time.Millisecond)
		if err != nil {
			return err
		}
		if len(got) > 0 {
			t.Fatalf("restarted n3 still serves cleared retained messages %q", got)
		}
		return nil
	})
}
