package cluster_test

import (
	"strconv"
	"testing"

	"github.com/eclipse/paho.golang/paho"

	"github.com/roost-mqtt/roost/cluster"
	"github.com/roost-mqtt/roost/internal/clustertest"
)

// BenchmarkClusterConnectWill measures clean CONNECTs (to CONNACK) on a
// three-node cluster, with and without a will. A will rides in the owner
// record the claim writes anyway (cleanwill.go): "connect" keeps each
// connection open, so it measures the CONNECT alone (the will's bytes in
// that write); "cycle" DISCONNECTs each one before the next, which adds
// the record's rewrite without the will (one more replicated write on the
// same bucket, off the client's path but not off the bucket's). Each
// iteration uses a new client id, as a fleet of devices does.
func BenchmarkClusterConnectWill(b *testing.B) {
	// The product's partitions, not the tests' 2: a measurement of what a deployment runs.
	c := clustertest.Start(b, clustertest.Options{Nodes: 3, Partitions: cluster.DefaultPartitions})
	addr := c.Nodes[0].MQTT
	run := 0
	for _, mode := range []string{"connect", "cycle"} {
		for _, withWill := range []bool{false, true} {
			name := mode + "/no-will"
			if withWill {
				name = mode + "/will"
			}
			b.Run(name, func(b *testing.B) {
				run++
				var open []*clustertest.Client
				defer func() {
					for _, cl := range open {
						cl.Disconnect(&paho.Disconnect{})
					}
				}()
				for i := range b.N {
					id := "bench-" + strconv.Itoa(run) + "-" + strconv.Itoa(i)
					cp := &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}
					if withWill {
						cp.WillMessage = &paho.WillMessage{Topic: "bench/will/" + id, QoS: 1, Payload: make([]byte, 64)}
					}
					cl, ack, err := clustertest.Dial(b, addr, cp)
					if err != nil {
						b.Fatal(err)
					}
					if ack.ReasonCode != 0 {
						b.Fatalf("%s: CONNACK 0x%02X", id, ack.ReasonCode)
					}
					if mode == "cycle" {
						cl.Disconnect(&paho.Disconnect{})
					} else {
						open = append(open, cl)
					}
				}
				b.StopTimer()
			})
		}
	}
}
