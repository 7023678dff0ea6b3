package jepsen

import (
	"context"
	"io"
	"net"
	"testing"

	"github.com/roost-mqtt/roost/packet"
)

// TestReadRefusedIsNoRead: a SUBSCRIBE refused by its SUBACK (a cluster
// node that cannot bring its retained messages up to date answers 0x80)
// reads nothing, not an empty register: the read is not recorded, and the
// reader goes on with the next one on the same connection.
func TestReadRefusedIsNoRead(t *testing.T) {
	for _, tt := range []struct {
		name  string
		codes []packet.ReasonCode
		reads int
	}{
		{"refused", []packet.ReasonCode{packet.UnspecifiedError}, 0},
		{"granted then a retained message", []packet.ReasonCode{packet.GrantedQoS1}, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			client, server := net.Pipe()
			defer client.Close()
			go io.Copy(io.Discard, server) // what the reader sends
			r := &run{cfg: NewConfig(1), h: newHistory(1, 1)}
			rd := &reader{r: r, id: "rd0", rng: r.rng(), topics: []string{"r/0"}}
			pkts := make(chan packet.Packet, 4)
			pkts <- &packet.Suback{PacketID: 1, ReasonCodes: tt.codes}
			if tt.reads > 0 {
				pkts <- &packet.Publish{Topic: "r/0", Retain: true, Payload: []byte("j0")}
				pkts <- &packet.Unsuback{PacketID: 2}
			}
			if !rd.read(context.Background(), &conn{nc: client}, pkts, 0) {
				t.Fatal("the reader gave its connection up")
			}
			if got := len(r.h.Reads); got != tt.reads {
				t.Fatalf("%d reads recorded, want %d", got, tt.reads)
			}
		})
	}
}
