package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/roost-mqtt/roost/cluster"
	"github.com/roost-mqtt/roost/internal/clustertest"
)

// BenchmarkClusterRetainedSubscribe measures a retained read on a
// three-node cluster: SUBSCRIBE to a topic with a retained message (written
// on another node) until that message arrives, then UNSUBSCRIBE. Each
// read first brings the node up to date with the retained stream
// (retained.sync: one request to the stream's leader while the node holds
// a lease on it, retained_lease.go). "healthy" is all three nodes up;
// "node-down" stops the third node first, so that the stream's leader has
// not heard from one replica and gives no lease: each read then appends a
// read marker (one replicated write).
func BenchmarkClusterRetainedSubscribe(b *testing.B) {
	// The product's partitions, not the tests' 2: a measurement of what a deployment runs.
	c := clustertest.Start(b, clustertest.Options{Nodes: 3, Partitions: cluster.DefaultPartitions})
	const topic = "bench/retained"
	w := clustertest.Connect(b, c.Nodes[0].MQTT, "bench-ret-w")
	if rc := w.Pub(b, &paho.Publish{Topic: topic, QoS: 1, Retain: true, Payload: []byte("v")}); rc >= 0x80 {
		b.Fatalf("retained write: PUBACK 0x%02X", rc)
	}
	r := clustertest.Connect(b, c.Nodes[1].MQTT, "bench-ret-r")
	for _, mode := range []string{"healthy", "node-down"} {
		var stopped time.Time
		if mode == "node-down" {
			c.Nodes[2].Stop(b)
			stopped = time.Now()
		}
		// Until reads are answered (after a node stops, the stream may
		// elect a leader) and, with a node down, the lease taken while
		// it was up has run out: a read takes a marker, or (a build
		// without leases) longer than any lease has passed. Bounded.
		var err error
		for stop := time.Now().Add(60 * time.Second); time.Now().Before(stop); {
			marks := c.Nodes[1].CountLog(markLine)
			if err = retainedRead(r, topic); err == nil && (mode == "healthy" ||
				c.Nodes[1].CountLog(markLine) > marks || time.Since(stopped) > raftMinElection+time.Second) {
				break
			}
			if err == nil {
				err = errors.New("reads still answered under the lease taken with every node up")
			}
		}
		if err != nil {
			b.Fatal(err)
		}
		b.Run(mode, func(b *testing.B) {
			marks := c.Nodes[1].CountLog(markLine)
			for range b.N {
				if err := retainedRead(r, topic); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(c.Nodes[1].CountLog(markLine)-marks)/float64(b.N), "markers/op")
		})
	}
}

// raftMinElection is nats-server's shortest election timeout: no lease
// outlives it (retained_lease.go).
const raftMinElection = 4 * time.Second

// markLine is the node's debug line for a read that took a read marker.
const markLine = "cluster: retained read by marker"

// retainedRead subscribes c to topic, waits for its retained message and
// unsubscribes.
func retainedRead(c *clustertest.Client, topic string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 0}}})
	switch {
	case err != nil:
		return err
	case len(sa.Reasons) != 1 || sa.Reasons[0] >= 0x80:
		return fmt.Errorf("SUBACK %v", sa.Reasons)
	}
	select {
	case <-c.In:
	case <-ctx.Done():
		return errors.New("no retained message")
	}
	_, err = c.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{topic}})
	return err
}
