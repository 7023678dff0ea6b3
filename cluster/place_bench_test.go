package cluster

import (
	"fmt"
	"testing"

	"github.com/roost-mqtt/roost/broker"
)

// BenchmarkStoredMessage is a queued message's stored form (its QueuePut
// op, a handover's queue, a live move's export: appendMessage) and its
// reading back (readMessage), without a place and with one (place.go).
func BenchmarkStoredMessage(b *testing.B) {
	for _, placed := range []bool{false, true} {
		m := &broker.Message{Topic: "sensors/room1/temp", Payload: make([]byte, 64), QoS: 1, From: "pub-1"}
		if placed {
			m.SetPlace(originKey{node: "n2", inc: "0123456789abcdef", id: 1 << 30}.place())
		}
		b.Run(fmt.Sprintf("append/place=%v", placed), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := appendMessage(nil, m, ""); err != nil {
					b.Fatal(err)
				}
			}
		})
		enc, _ := appendMessage(nil, m, "")
		b.Run(fmt.Sprintf("read/place=%v", placed), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r := reader{b: enc}
				if readMessage(&r) == nil {
					b.Fatal(r.err)
				}
			}
		})
	}
}

// BenchmarkDecodeForward reads a forward (deliverForward's decodeForward)
// and names its place (placeSources.of), as every forward received now
// does.
func BenchmarkDecodeForward(b *testing.B) {
	m := &broker.Message{Topic: "sensors/room1/temp", Payload: make([]byte, 64), QoS: 1, From: "pub-1"}
	pub, err := encodePublish(m)
	if err != nil {
		b.Fatal(err)
	}
	fwd := encodeForward(m, []string{"g\x00sensors/+/temp"}, pub)
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodeForward(fwd); err != nil {
				b.Fatal(err)
			}
		}
	})
	var ps placeSources
	k := originKey{node: "n2", inc: "0123456789abcdef"}
	b.Run("place", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			k.id++
			ps.of(k)
		}
	})
}
