// Package storebench measures the durable store through the broker: QoS 1
// throughput to a persistent subscriber on disk against the same in
// memory. Results: RESULTS.md.
package storebench

import (
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/packet"
	"github.com/roost-mqtt/roost/store"
)

// BenchmarkQoS1PersistentSubscriber: P publishers, each with up to 64 QoS 1
// messages in flight, publish 64-byte messages to one persistent MQTT 5
// subscriber (QoS 1, acknowledging everything) on the same topic; an op is
// one message acknowledged to its publisher and delivered.
func BenchmarkQoS1PersistentSubscriber(b *testing.B) {
	for _, pubs := range []int{1, 8} {
		for _, backend := range []string{"memory", "disk"} {
			b.Run(fmt.Sprintf("%s/publishers=%d", backend, pubs), func(b *testing.B) {
				var st broker.Store = store.NewMemory()
				if backend == "disk" {
					d, err := store.Open(b.TempDir(), store.DiskOptions{Logger: slog.New(slog.DiscardHandler)})
					if err != nil {
						b.Fatal(err)
					}
					st = d
				}
				runQoS1(b, st, pubs)
			})
		}
	}
}

func runQoS1(b *testing.B, st broker.Store, pubs int) {
	srv, err := broker.New(broker.Options{Store: st, SysInterval: -1, MaxQueued: 1 << 20, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Shutdown(b.Context())
	addr := ln.Addr().String()

	sub := dial(b, addr, "sub", 3600)
	sub.send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "bench/#", Options: packet.SubOptions{QoS: 1}}}})
	sub.next()
	received := make(chan struct{})
	go func() { // acknowledge everything; signal when b.N arrived
		n := 0
		for {
			p, err := sub.r.ReadPacket(packet.V5)
			if err != nil {
				return
			}
			if m, ok := p.(*packet.Publish); ok {
				sub.send(&packet.Puback{PacketID: m.PacketID})
				if n++; n == b.N {
					close(received)
				}
			}
		}
	}()

	runPublishers(b, addr, pubs, received, publishN)
}

// runPublishers has pubs publishers send b.N 64-byte messages in all
// with publish, waits until the subscriber closed received, and reports
// the rate.
func runPublishers(b *testing.B, addr string, pubs int, received <-chan struct{}, publish func(*testing.B, string, string, int, []byte)) {
	payload := make([]byte, 64)
	per := (b.N + pubs - 1) / pubs
	b.SetBytes(int64(len(payload)))
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for p := range pubs {
		n := min(per, b.N-p*per)
		wg.Add(1)
		go func() {
			defer wg.Done()
			publish(b, addr, fmt.Sprintf("pub-%d", p), n, payload)
		}()
	}
	wg.Wait()
	select {
	case <-received:
	case <-time.After(30 * time.Second):
		b.Fatal("subscriber did not receive every message")
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msg/s")
}

// publishN publishes n QoS 1 messages with up to 64 in flight and returns
// when all are acknowledged.
func publishN(b *testing.B, addr, id string, n int, payload []byte) {
	c := dial(b, addr, id, 0)
	defer c.nc.Close()
	window := make(chan uint16, 64)
	for pid := uint16(1); pid <= 64; pid++ {
		window <- pid
	}
	done := make(chan struct{})
	go func() {
		for acked := 0; acked < n; {
			p, err := c.r.ReadPacket(packet.V5)
			if err != nil {
				b.Error(err)
				break
			}
			if a, ok := p.(*packet.Puback); ok {
				acked++
				window <- a.PacketID
			}
		}
		close(done)
	}()
	for range n {
		pid := <-window
		c.send(&packet.Publish{Topic: "bench/" + id, QoS: 1, PacketID: pid, Payload: payload})
	}
	<-done
}

type client struct {
	nc  net.Conn
	r   *packet.Reader
	mu  sync.Mutex
	buf []byte
}

func dial(b *testing.B, addr, id string, expiry uint32) *client {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	c := &client{nc: nc, r: packet.NewReader(nc, 0)}
	cp := &packet.Connect{ClientID: id, KeepAlive: 60, CleanStart: true}
	if expiry > 0 {
		cp.Properties.SessionExpiry = expiry
		cp.Properties.Set(packet.PropSessionExpiry)
	}
	c.send(cp)
	if ack, ok := c.next().(*packet.Connack); !ok || ack.ReasonCode != packet.Success {
		b.Fatalf("CONNECT %s: %+v", id, ack)
	}
	return c
}

func (c *client) send(p packet.Packet) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf, _ = p.Encode(c.buf[:0], packet.V5)
	c.nc.Write(c.buf)
}

func (c *client) next() packet.Packet {
	p, _ := c.r.ReadPacket(packet.V5)
	return p
}
