package broker

import (
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// BenchmarkOneByOne is the latency scenario's path (roost bench latency):
// one publisher sends a PUBLISH of 64 bytes on a fixed topic and waits
// until the subscribers (at QoS 0; one, or 3 for a message shared through
// its wire form) have read it, and for QoS 1 its PUBACK, before sending
// the next, so each read of the broker brings one packet. The clients
// neither decode nor allocate (they read known lengths), so B/op and
// allocs/op are the broker's own per message routed: the fresh heap that
// lands on new pages until the first collection.
func BenchmarkOneByOne(b *testing.B) {
	for _, bc := range []struct {
		name string
		qos  packet.QoS
		subs int
	}{{"QoS0", 0, 1}, {"QoS0-3subs", 0, 3}, {"QoS1", 1, 1}} {
		b.Run(bc.name, func(b *testing.B) {
			qos := bc.qos
			_, addr := startServer(b, Options{})
			var subs []net.Conn
			for i := range bc.subs {
				sub, sr := benchConn(b, addr, fmt.Sprint("sub", i), packet.V311)
				s, _ := (&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "bench/+"}}}).Encode(nil, packet.V311)
				sub.Write(s)
				if _, err := sr.ReadPacket(packet.V311); err != nil {
					b.Fatal(err)
				}
				// A bound for a broken broker; each op takes microseconds.
				sub.SetReadDeadline(time.Now().Add(2 * time.Minute))
				subs = append(subs, sub)
			}
			pub, _ := benchConn(b, addr, "pub", packet.V311)
			p := &packet.Publish{Topic: "bench/latency", Payload: make([]byte, 64)}
			delivery, _ := p.Encode(nil, packet.V311)
			p.QoS, p.PacketID = qos, 1
			wire, _ := p.Encode(nil, packet.V311)
			got := make([]byte, len(delivery))
			ack := make([]byte, 4)
			pub.SetReadDeadline(time.Now().Add(2 * time.Minute))
			b.SetBytes(64)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := pub.Write(wire); err != nil {
					b.Fatal(err)
				}
				for _, sub := range subs {
					if _, err := io.ReadFull(sub, got); err != nil {
						b.Fatal(err)
					}
				}
				if qos > 0 {
					if _, err := io.ReadFull(pub, ack); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
