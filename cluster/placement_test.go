package cluster_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestClusterReplicasReplaced: five nodes, three replicas (the default).
// Each replicated object (the ownership bucket, the retained stream, the
// session partitions) has members on three of the five nodes. Two nodes
// that both hold a member of the ownership bucket are killed one after
// the other: after the first, everything keeps working (two members of
// three left), and its members are placed on other nodes once it has been
// silent long enough; so after the second everything still works (three
// nodes of five run). Without the re-placement the second loss would leave
// the bucket one member of three, and no CONNECT with a client id could be
// accepted. cluster.replace_after is 5 s here (default 15 s): what the
// test asks is that the members move once their node has been silent
// that long, not how long that is; the 10 s less are 50 node-seconds.
func TestClusterReplicasReplaced(t *testing.T) {
	t.Parallel() // see harness_test.go
	tc := harness.StartClusterSetup(t, 5, harness.Setup{Config: "cluster:\n  replace_after: 5s\n"})
	own := "KV_ROOST_OWN"
	var holders []*harness.Node
	harness.Eventually(t, 30*time.Second, func() error {
		holders = members(tc.Nodes, own)
		if len(holders) != 3 {
			return fmt.Errorf("%s has members on %d nodes, want 3", own, len(holders))
		}
		return nil
	})
	v1, v2 := holders[0], holders[1]
	var live []*harness.Node
	for _, nd := range tc.Nodes {
		if nd != v1 && nd != v2 {
			live = append(live, nd)
		}
	}
	expiry := uint32(600)
	sub, ack := harness.ConnectWith(t, live[0], &paho.Connect{ClientID: "pl-sub", CleanStart: true, KeepAlive: 60,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
	if ack.ReasonCode != 0 {
		t.Fatalf("CONNACK 0x%02X", ack.ReasonCode)
	}
	sub.Sub(t, paho.SubscribeOptions{Topic: "pl/t", QoS: 1})
	pub := harness.Connect(t, live[1], "pl-pub")
	pub.AwaitInterest(t, "pl/t")

	works := func(round int) {
		t.Helper()
		// A client id can be claimed (ownership bucket), a retained
		// QoS 1 publish is acknowledged (retained stream), and a QoS 1
		// message for the persistent session is acknowledged and
		// delivered (its session partition).
		harness.Eventually(t, 60*time.Second, func() error {
			var c *harness.Client
			return harness.Redial(t, live[2], "pl-probe-"+strconv.Itoa(round), &c)
		})
		harness.Eventually(t, 60*time.Second, func() error {
			if rc, closed := pub.TryPublish(t, &paho.Publish{Topic: "pl/r", QoS: 1, Retain: true, Payload: []byte("r" + strconv.Itoa(round))}); closed || rc >= 0x80 {
				if closed {
					pub = harness.Connect(t, live[1], "pl-pub")
				}
				return fmt.Errorf("retained publish: PUBACK 0x%02X, closed %v", rc, closed)
			}
			return nil
		})
		payload := "m" + strconv.Itoa(round)
		harness.Eventually(t, 60*time.Second, func() error {
			if rc, closed := pub.TryPublish(t, &paho.Publish{Topic: "pl/t", QoS: 1, Payload: []byte(payload)}); closed || rc != 0 {
				if closed {
					pub = harness.Connect(t, live[1], "pl-pub")
				}
				return fmt.Errorf("publish for the persistent session: PUBACK 0x%02X, closed %v", rc, closed)
			}
			return nil
		})
		for {
			if p := sub.Next(t, 30*time.Second); string(p.Payload) == payload {
				break
			}
		}
	}

	tc.Kill(v1, syscall.SIGKILL)
	works(1)
	// Every object v1 held gets a third member again among the live
	// nodes.
	harness.Eventually(t, 90*time.Second, func() error {
		for _, stream := range replicatedStreams(tc.Partitions()) {
			if m := members(append(live, v2), stream); len(m) < 3 {
				return fmt.Errorf("%s: members on %d live nodes, want 3", stream, len(m))
			}
		}
		return nil
	})
	tc.Kill(v2, syscall.SIGKILL)
	works(2)
}

// replicatedStreams are the JetStream streams of the cluster's replicated
// objects with partitions session partitions.
func replicatedStreams(partitions int) []string {
	s := []string{"KV_ROOST_OWN", "ROOST_RETAIN"}
	for p := range partitions {
		s = append(s, "ROOST_SESS_"+strconv.Itoa(p))
	}
	return s
}

// members returns the nodes among nodes that hold a member of stream: its
// directory in their JetStream store.
func members(nodes []*harness.Node, stream string) []*harness.Node {
	var out []*harness.Node
	for _, nd := range nodes {
		dirs, _ := filepath.Glob(filepath.Join(nd.Data, "cluster", "jetstream", "*", "streams", stream))
		for _, d := range dirs {
			if fi, err := os.Stat(d); err == nil && fi.IsDir() && !slices.Contains(out, nd) {
				out = append(out, nd)
			}
		}
	}
	return out
}
