package storebench

import (
	"fmt"
	"log/slog"
	"net"
	"testing"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/packet"
	"github.com/roost-mqtt/roost/store"
)

// BenchmarkQoS2PersistentPublisher: P persistent publishers, each with up
// to 64 QoS 2 messages in flight (a slot is free again at PUBCOMP),
// publish 64-byte messages to one persistent MQTT 5 subscriber (QoS 2,
// completing everything) on a disk store; an op is one message completed
// to its publisher and delivered. A persistent publisher's QoS 2 publish
// holds the store from its packet id to its deliveries (broker.Grouper):
// this is the path that costs.
func BenchmarkQoS2PersistentPublisher(b *testing.B) {
	for _, pubs := range []int{1, 8} {
		b.Run(fmt.Sprintf("disk/publishers=%d", pubs), func(b *testing.B) {
			d, err := store.Open(b.TempDir(), store.DiskOptions{Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			runQoS2(b, d, pubs)
		})
	}
}

func runQoS2(b *testing.B, st broker.Store, pubs int) {
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
	sub.send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "bench/#", Options: packet.SubOptions{QoS: 2}}}})
	sub.next()
	received := make(chan struct{})
	go func() { // complete everything; signal when b.N arrived
		n := 0
		for {
			p, err := sub.r.ReadPacket(packet.V5)
			if err != nil {
				return
			}
			switch m := p.(type) {
			case *packet.Publish:
				sub.send(&packet.Pubrec{PacketID: m.PacketID})
				if n++; n == b.N {
					close(received)
				}
			case *packet.Pubrel:
				sub.send(&packet.Pubcomp{PacketID: m.PacketID})
			}
		}
	}()

	runPublishers(b, addr, pubs, received, publishQoS2)
}

// publishQoS2 publishes n QoS 2 messages from a persistent session with up
// to 64 in flight and returns when all are complete.
func publishQoS2(b *testing.B, addr, id string, n int, payload []byte) {
	c := dial(b, addr, id, 3600)
	defer c.nc.Close()
	window := make(chan uint16, 64)
	for pid := uint16(1); pid <= 64; pid++ {
		window <- pid
	}
	done := make(chan struct{})
	go func() {
		for completed := 0; completed < n; {
			p, err := c.r.ReadPacket(packet.V5)
			if err != nil {
				b.Error(err)
				break
			}
			switch a := p.(type) {
			case *packet.Pubrec:
				c.send(&packet.Pubrel{PacketID: a.PacketID})
			case *packet.Pubcomp:
				completed++
				window <- a.PacketID
			}
		}
		close(done)
	}()
	for range n {
		pid := <-window
		c.send(&packet.Publish{Topic: "bench/" + id, QoS: 2, PacketID: pid, Payload: payload})
	}
	<-done
}
