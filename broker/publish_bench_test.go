package broker

import (
	"io"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// BenchmarkOneByOne is the latency scenario's path (roost bench latency):
// one publisher sends a PUBLISH of 64 bytes on a fixed topic and waits
// until the one subscriber (at QoS 0) has read it, and for QoS 1 its
// PUBACK, before sending the next, so each read of the broker brings one
// packet. The clients neither decode nor allocate (they read known
// lengths), so B/op and allocs/op are the broker's own per message routed:
// the fresh heap that lands on new pages until the first collection.
func BenchmarkOneByOne(b *testing.B) {
	for _, qos := range []packet.QoS{0, 1} {
		b.Run(map[packet.QoS]string{0: "QoS0", 1: "QoS1"}[qos], func(b *testing.B) {
			_, addr := startServer(b, Options{})
			sub, sr := benchConn(b, addr, "sub", packet.V311)
			s, _ := (&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "bench/+"}}}).Encode(nil, packet.V311)
			sub.Write(s)
			if _, err := sr.ReadPacket(packet.V311); err != nil {
				b.Fatal(err)
			}
			pub, _ := benchConn(b, addr, "pub", packet.V311)
			p := &packet.Publish{Topic: "bench/latency", Payload: make([]byte, 64)}
			delivery, _ := p.Encode(nil, packet.V311)
			p.QoS, p.PacketID = qos, 1
			wire, _ := p.Encode(nil, packet.V311)
			got := make([]byte, len(delivery))
			ack := make([]byte, 4)
			// A bound for a broken broker; each op takes microseconds.
			sub.SetReadDeadline(time.Now().Add(2 * time.Minute))
			pub.SetReadDeadline(time.Now().Add(2 * time.Minute))
			b.SetBytes(64)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := pub.Write(wire); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(sub, got); err != nil {
					b.Fatal(err)
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
