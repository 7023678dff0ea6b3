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

// BenchmarkClusterGroupQoS2 publishes QoS 2 messages from a persistent
// publisher on n1 (each under an Origin) to a share group whose one
// member is on n1 (local) or on n2 (remote): the path whose first
// routings claim the group (claimServed, one stream append per group and
// message, not waited for). Each publish waits for its PUBCOMP, and
// parallel runs 8 such publishers at once. Compare binaries with
// ROOST_TEST_BIN (bench/jepsen/RESULTS.md, "Claimed groups that miss").
// remote-clean's publishers are clean sessions (no Origin), as is the
// member: nothing is claimed; remote-clean-persistent's member is
// persistent, and n2 claims the group under the forward's source
// (claimServed; RESULTS.md, "g133").
func BenchmarkClusterGroupQoS2(b *testing.B) {
	// The product's partitions, not the tests' 2: a measurement of what a deployment runs.
	c := clustertest.Start(b, clustertest.Options{Nodes: 3, Partitions: cluster.DefaultPartitions})
	for _, where := range []struct {
		name              string
		node              int
		clean, persistent bool // clean publishers; a persistent member
	}{{"local", 0, false, false}, {"remote", 1, false, false}, {"remote-clean", 1, true, false}, {"remote-clean-persistent", 1, true, true}} {
		expiry := uint32(600)
		if where.clean {
			expiry = 0
		}
		var mexpiry *uint32
		if where.persistent {
			mexpiry = new(uint32)
			*mexpiry = 600
		}
		for _, pubs := range []int{1, 8} {
			name := where.name + "/publishers=" + strconv.Itoa(pubs)
			b.Run(name, func(b *testing.B) {
				prefix := "gb-" + where.name + strconv.Itoa(pubs)
				topic := prefix + "/t"
				m, _, err := clustertest.Dial(b, c.Nodes[where.node].MQTT, &paho.Connect{ClientID: prefix + "-m", CleanStart: true, KeepAlive: 30,
					Properties: &paho.ConnectProperties{SessionExpiryInterval: mexpiry}})
				if err != nil {
					b.Fatal(err)
				}
				stop := make(chan struct{})
				defer close(stop)
				go func() {
					for {
						select {
						case <-m.In:
						case <-stop:
							return
						}
					}
				}()
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if _, err := m.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "$share/gb/" + topic, QoS: 2}}}); err != nil {
					b.Fatal(err)
				}
				var ps []*clustertest.Client
				for i := range pubs {
					p, _, err := clustertest.Dial(b, c.Nodes[0].MQTT, &paho.Connect{ClientID: prefix + "-p" + strconv.Itoa(i), CleanStart: true, KeepAlive: 30,
						Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
					if err != nil {
						b.Fatal(err)
					}
					ps = append(ps, p)
				}
				ps[0].AwaitInterest(b, topic)
				publishSpread(b, ps, topic, 2)
			})
		}
	}
}
