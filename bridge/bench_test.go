package bridge

import (
	"context"
	"net"
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
func BenchmarkForwardQoS1(b *testing.B) { benchForward(b, 0, 1, nil) }

// BenchmarkForwardQoS2 is the same at QoS 2, with the bridge's QoS 2
// state in memory and in files (what roost serve uses: one file per
// message in flight, written at PUBLISH, PUBREC and completion, deleted at
// the local PUBREL).
func BenchmarkForwardQoS2(b *testing.B) {
	b.Run("memory", func(b *testing.B) { benchForward(b, 0, 2, MemoryState()) })
	b.Run("files", func(b *testing.B) {
		st, err := FileState(b.TempDir(), false)
		if err != nil {
			b.Fatal(err)
		}
		benchForward(b, 0, 2, st)
	})
	b.Run("files-fsync", func(b *testing.B) {
		st, err := FileState(b.TempDir(), true)
		if err != nil {
			b.Fatal(err)
		}
		benchForward(b, 0, 2, st)
	})
}

// BenchmarkForwardQoS1SlowLink is the same through a link that delays
// each direction by 10 ms: what one message per round trip would cap at
// 50 msg/s.
func BenchmarkForwardQoS1SlowLink(b *testing.B) { benchForward(b, 10*time.Millisecond, 1, nil) }

func benchForward(b *testing.B, delay time.Duration, qos packet.QoS, st *State) {
	srv, addr := brokertest.Start(b, broker.Options{MaxQueued: 1 << 20})
	roostURL := "mqtt://" + addr
	m := mosquittotest.Start(b, "max_queued_messages 0", "max_inflight_messages 0")
	mURL := "mqtt://" + m.Addr
	remote := mURL
	if delay > 0 {
		remote = "mqtt://" + delayProxy(b, m.Addr, delay)
	}
	br, err := New(srv, Config{Name: "bench", Addresses: []string{remote}, Notifications: false, State: st,
		Topics: []Rule{{Pattern: "b/#", Direction: Out, QoS: qos}}})
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
	if _, err := sink.Subscribe(ctx, client.Subscription{Filter: "b/#", QoS: qos, Handler: func(*client.Message) { got.Add(1) }}); err != nil {
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
			pub.Publish(ctx, client.Message{Topic: "b/x", Payload: payload, QoS: qos})
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

// delayProxy forwards TCP connections to addr, holding every chunk for
// delay in each direction (order kept), and returns its address.
func delayProxy(b *testing.B, addr string, delay time.Duration) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	pipe := func(dst, src net.Conn) {
		type chunk struct {
			at   time.Time
			data []byte
		}
		q := make(chan chunk, 4096)
		go func() {
			defer dst.Close()
			for c := range q {
				time.Sleep(time.Until(c.at))
				if _, err := dst.Write(c.data); err != nil {
					return
				}
			}
		}()
		buf := make([]byte, 64<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				q <- chunk{time.Now().Add(delay), append([]byte(nil), buf[:n]...)}
			}
			if err != nil {
				close(q)
				return
			}
		}
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				continue
			}
			go pipe(s, c)
			go pipe(c, s)
		}
	}()
	return ln.Addr().String()
}
