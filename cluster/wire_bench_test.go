package cluster

import (
	"testing"

	"github.com/roost-mqtt/roost/broker"
)

// BenchmarkEncodeForward: one forward per node a QoS 2 message goes to,
// under a persistent publisher's Origin (node.go, Forward): the per-node
// part of the publish path's cost.
func BenchmarkEncodeForward(b *testing.B) {
	m := &broker.Message{Topic: "sensors/room1/temp", Payload: make([]byte, 64), QoS: 2, From: "pub-1"}
	pub, err := encodePublish(m)
	if err != nil {
		b.Fatal(err)
	}
	o := broker.Origin{ClientID: "pub-1", PacketID: 42, Nonce: 1 << 40}
	groups := []string{"g\x00sensors/+/temp"}
	b.ReportAllocs()
	for b.Loop() {
		encodeForwardOrigin(m, groups, pub, o)
	}
}
