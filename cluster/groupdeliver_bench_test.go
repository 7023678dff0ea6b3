package cluster_test

import (
	"context"
	"encoding/binary"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/roost-mqtt/roost/cluster"
	"github.com/roost-mqtt/roost/internal/clustertest"
)

// BenchmarkClusterGroupQoS2Delivery measures what a share group member
// gets: persistent publishers on n1 send QoS 2 messages (each under an
// Origin) to a group whose one member, persistent, is on n1 (local) or
// n2 (remote, a forward's first routing), and the time counted is until
// the member got every message (ns/op), with each message's delivery
// latency from its send (p50-ms, p99-ms). The member's QoS 2 copies wait
// for the group's claim before their PUBLISH (broker/servedgate.go), one
// stream round trip more than their durability, which the publishers'
// PUBCOMP does not wait for (BenchmarkClusterGroupQoS2 would not see it).
//
// ROOST_BENCH_BINS=name=path,name=path runs a cluster of each roost
// binary (on addresses of its own) and alternates them, rounds times
// (ROOST_BENCH_ROUNDS, default 2), so that two builds are measured side
// by side on the same machine load (bench/jepsen/RESULTS.md, "gapac").
// Unset: one cluster of the usual binary.
func BenchmarkClusterGroupQoS2Delivery(b *testing.B) {
	type build struct{ name, bin string }
	builds := []build{{"", ""}}
	if v := os.Getenv("ROOST_BENCH_BINS"); v != "" {
		builds = nil
		for _, kv := range strings.Split(v, ",") {
			name, bin, _ := strings.Cut(kv, "=")
			builds = append(builds, build{name, bin})
		}
	}
	rounds := 2
	if v, err := strconv.Atoi(os.Getenv("ROOST_BENCH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	clusters := make([]*clustertest.Cluster, len(builds))
	for i, bd := range builds {
		// The product's partitions, not the tests' 2: a measurement of what a deployment runs.
		clusters[i] = clustertest.Start(b, clustertest.Options{Nodes: 3, Partitions: cluster.DefaultPartitions, FirstIP: 2 + 10*i, Bin: bd.bin})
	}
	calls := 0 // each call its own client ids: a benchmark function runs more than once
	for range rounds {
		for i, bd := range builds {
			for _, where := range []struct {
				name string
				node int
			}{{"local", 0}, {"remote", 1}} {
				for _, pubs := range []int{1, 8} {
					name := "publishers=" + strconv.Itoa(pubs)
					if bd.name != "" {
						name = bd.name + "/" + where.name + "/" + name
					} else {
						name = where.name + "/" + name
					}
					b.Run(name, func(b *testing.B) {
						calls++
						prefix := "gd" + strconv.Itoa(calls)
						groupDelivery(b, clusters[i], where.node, pubs, prefix)
					})
				}
			}
		}
	}
}

// groupDelivery runs one case of BenchmarkClusterGroupQoS2Delivery.
func groupDelivery(b *testing.B, c *clustertest.Cluster, node, pubs int, prefix string) {
	topic := prefix + "/t"
	expiry := uint32(600)
	m, _, err := clustertest.Dial(b, c.Nodes[node].MQTT, &paho.Connect{ClientID: prefix + "-m", CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := m.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "$share/gd/" + topic, QoS: 2}}}); err != nil {
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
	for len(m.In) > 0 {
		<-m.In // the probes
	}
	lat := make([]time.Duration, 0, b.N)
	got := make(chan struct{})
	go func() {
		defer close(got)
		deadline := time.After(2 * time.Minute)
		for len(lat) < b.N {
			select {
			case p := <-m.In:
				if len(p.Payload) == 8 {
					lat = append(lat, time.Duration(time.Now().UnixNano()-int64(binary.BigEndian.Uint64(p.Payload))))
				}
			case <-deadline:
				return
			}
		}
	}()
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
				payload := binary.BigEndian.AppendUint64(nil, uint64(time.Now().UnixNano()))
				_, err = p.Publish(ctx, &paho.Publish{Topic: topic, QoS: 2, Payload: payload})
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
	<-got
	b.StopTimer()
	if len(lat) < b.N {
		b.Fatalf("the member got %d of %d messages", len(lat), b.N)
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2])/1e6, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100])/1e6, "p99-ms")
}
