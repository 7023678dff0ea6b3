package packet_test

import (
	"bytes"
	"fmt"

	"github.com/roost-mqtt/roost/packet"
)

// Encode a PUBLISH for MQTT 5.0, then read it back as a server would.
func Example() {
	pub := &packet.Publish{QoS: 1, PacketID: 7, Topic: "sensors/1/temp", Payload: []byte("21.5")}
	pub.Properties.Set(packet.PropMessageExpiry)
	pub.Properties.MessageExpiry = 60

	wire, err := pub.Encode(nil, packet.V5)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("% x\n", wire)

	r := packet.NewReader(bytes.NewReader(wire), 1<<20)
	p, err := r.ReadPacket(packet.V5)
	if err != nil {
		fmt.Println(err)
		return
	}
	got := p.(*packet.Publish)
	fmt.Println(got.Type(), got.Topic, got.PacketID, string(got.Payload), got.Properties.MessageExpiry)
	// Output:
	// 32 1c 00 0e 73 65 6e 73 6f 72 73 2f 31 2f 74 65 6d 70 00 07 05 02 00 00 00 3c 32 31 2e 35
	// PUBLISH sensors/1/temp 7 21.5 60
}

// ParseFixedHeader and Decode work on a buffer that may hold a partial
// packet, for callers that manage their own reads.
func ExampleDecode() {
	buf := []byte{0x40, 0x02, 0x00} // a PUBACK, one byte still in flight
	h, err := packet.ParseFixedHeader(buf)
	fmt.Println(h.Type, h.Remaining, err, len(buf) >= h.HeaderLen+h.Remaining)

	buf = append(buf, 0x05)
	p, err := packet.Decode(h, buf[h.HeaderLen:h.HeaderLen+h.Remaining], packet.V311)
	fmt.Println(p.(*packet.Puback).PacketID, err)
	// Output:
	// PUBACK 2 <nil> false
	// 5 <nil>
}
