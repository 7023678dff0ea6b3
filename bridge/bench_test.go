package bridge

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/client"
	"github.com/roost-mqtt/roost/internal/brokertest"
	"github.com/roost-mqtt/roost/internal/mosquittotest"
	"github.com/roost-mqtt/roost/packet"
)

// BenchmarkForwardQoS1 measures QoS 1 messages forwarded out to a local
// mosquitto: the publisher on Roost sends without waiting (up to the
// broker's window), and the clock stops when the remote subscriber has
// them all. go test -run '^$' -bench Forward -benchtime 2000x ./bridge/
func BenchmarkForwardQoS1(b *testing.B) {
	srv, addr := brokertest.Start(b, broker.Options{MaxQueued: 1 << 20})
	roostURL := "mqtt://" + addr
	m := mosquittotest.Start(b, "max_queued_messages 0", "max_inflight_messages 0")
	mURL := "mqtt://" + m.Addr
	br, err := New(srv, Config{Name: "bench", Addresses: []string{mURL}, Notifications: false,
		Topics: []Rule{{Pattern: "b/#", Direction: Out, QoS: 1}}})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := br.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer br.Close(context.Background())
	var got atomic.Int64
	sink := mustClient(b, ctx, mURL)
	if _, err := sink.Subscribe(ctx, client.Subscription{Filter: "b/#", QoS: 1, Handler: func(*client.Message) { got.Add(1) }}); err != nil {
		b.Fatal(err)
	}
	for !br.Stats().Connected {
		time.Sleep(10 * time.Millisecond)
	}
	pub := mustClient(b, ctx, roostURL)
	payload := make([]byte, 64)
	b.ResetTimer()
	done := make(chan struct{}, b.N)
	for range b.N {
		go func() {
			pub.Publish(ctx, client.Message{Topic: "b/x", Payload: payload, QoS: 1})
			done <- struct{}{}
		}()
	}
	for range b.N {
		<-done
	}
	for got.Load() < int64(b.N) {
		if ctx.Err() != nil {
			b.Fatalf("%d of %d arrived", got.Load(), b.N)
		}
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
}

func mustClient(b *testing.B, ctx context.Context, url string) *client.Client {
	c, err := client.New(client.Options{Servers: []string{url}, Version: packet.V5, OfflineQueue: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Connect(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Disconnect(context.Background()) })
	return c
}
