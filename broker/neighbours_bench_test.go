package broker

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// BenchmarkRetainedSubscribeNeighbour measures how long an unrelated
// retained QoS 1 publish waits for its PUBACK while another client
// subscribes to "r/#" over 500 retained messages and the Authorizer takes
// 2 ms per receive check (issue 13: 1.1 s before retained delivery stopped
// authorizing under the retained store's lock). Run with
//
//	go test -run '^$' -bench RetainedSubscribeNeighbour -benchtime 5x ./broker/
func BenchmarkRetainedSubscribeNeighbour(b *testing.B) {
	az := AuthorizerFunc(func(_ context.Context, c *ClientInfo, act Action, _ string) bool {
		if act == ActionReceive && c.ClientID != "pub" {
			time.Sleep(2 * time.Millisecond)
		}
		return true
	})
	s, addr := startServer(b, Options{Authorizer: az})
	for i := range 500 {
		if _, err := s.Publish(PublishRequest{Topic: fmt.Sprintf("r/%d", i), Payload: []byte("v"), Retain: true}); err != nil {
			b.Fatal(err)
		}
	}
	pub := dial(b, addr, packet.V5)
	pub.Connect(&packet.Connect{ClientID: "pub", CleanStart: true})
	var waits []time.Duration
	b.ResetTimer()
	for i := range b.N {
		sub := dial(b, addr, packet.V5)
		sub.Connect(&packet.Connect{ClientID: fmt.Sprintf("sub%d", i), CleanStart: true})
		sub.Subscribe("r/#", 0)
		start := time.Now()
		pub.Send(&packet.Publish{Topic: "other/x", QoS: 1, PacketID: uint16(i + 1), Retain: true, Payload: []byte("p")})
		if _, ok := pub.Next(time.Minute).(*packet.Puback); !ok {
			b.Fatal("no PUBACK")
		}
		waits = append(waits, time.Since(start))
		for range 500 { // the subscriber's retained messages, before the next round
			if _, ok := sub.Next(time.Minute).(*packet.Publish); !ok {
				b.Fatal("retained delivery incomplete")
			}
		}
		sub.NC.Close()
	}
	b.StopTimer()
	slices.Sort(waits)
	b.ReportMetric(float64(waits[len(waits)/2])/1e6, "puback-p50-ms")
	b.ReportMetric(float64(waits[len(waits)-1])/1e6, "puback-max-ms")
}
