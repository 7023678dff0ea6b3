package cluster_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/roost-mqtt/roost/cluster"
	"github.com/roost-mqtt/roost/internal/clustertest"
)

// BenchmarkClusterDurableQoS1 publishes QoS 1 messages from clean
// publishers on n1 to persistent subscribers on n1: each PUBACK waits for
// the subscribers' queue ops in their partition streams. One subscriber:
// every op goes to one subject, where the sender's order per client
// (sessions.go, publishMore) makes ops wait most; 16: a partition's
// queue holds several clients' ops, and a client's next pack holds up
// the packs behind it. Each publisher waits for each PUBACK.
func BenchmarkClusterDurableQoS1(b *testing.B) {
	// The product's partitions, not the tests' 2: a measurement of what a deployment runs.
	c := clustertest.Start(b, clustertest.Options{Nodes: 3, Partitions: cluster.DefaultPartitions})
	expiry := uint32(600)
	for _, tc := range []struct{ subs, pubs int }{{1, 1}, {1, 8}, {1, 32}, {16, 32}} {
		subs, pubs := tc.subs, tc.pubs
		b.Run("subscribers="+strconv.Itoa(subs)+"/publishers="+strconv.Itoa(pubs), func(b *testing.B) {
			prefix := "db" + strconv.Itoa(subs) + "-" + strconv.Itoa(pubs)
			topic := prefix + "/t"
			stop := make(chan struct{})
			defer close(stop)
			for i := range subs {
				s, _, err := clustertest.Dial(b, c.Nodes[0].MQTT, &paho.Connect{ClientID: prefix + "-s" + strconv.Itoa(i), CleanStart: true, KeepAlive: 30,
					Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
				if err != nil {
					b.Fatal(err)
				}
				go func() {
					for {
						select {
						case <-s.In:
						case <-stop:
							return
						}
					}
				}()
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				_, err = s.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 1}}})
				cancel()
				if err != nil {
					b.Fatal(err)
				}
			}
			var ps []*clustertest.Client
			for i := range pubs {
				p, _, err := clustertest.Dial(b, c.Nodes[0].MQTT, &paho.Connect{ClientID: prefix + "-p" + strconv.Itoa(i), CleanStart: true, KeepAlive: 30})
				if err != nil {
					b.Fatal(err)
				}
				ps = append(ps, p)
			}
			ps[0].AwaitInterest(b, topic)
			publishSpread(b, ps, topic, 1)
		})
	}
}

// publishSpread publishes b.N messages to topic at qos, spread over the
// publishers ps, each waiting for its acknowledgement before its next,
// and times them (b.ResetTimer to b.StopTimer).
func publishSpread(b *testing.B, ps []*clustertest.Client, topic string, qos byte) {
	payload := make([]byte, 64)
	b.ResetTimer()
	errs := make(chan error, len(ps))
	for i, p := range ps {
		n := b.N / len(ps)
		if i < b.N%len(ps) {
			n++
		}
		go func() {
			var err error
			for range n {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				_, err = p.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Payload: payload})
				cancel()
				if err != nil {
					break
				}
			}
			errs <- err
		}()
	}
	for range ps {
		if err := <-errs; err != nil {
			b.Error(err)
		}
	}
	b.StopTimer()
}
