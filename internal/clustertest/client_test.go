package clustertest

import (
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/roost-mqtt/roost/packet"
)

// TestSubOutwaitsTheNodesBound: a node that cannot serve a SUBSCRIBE (its
// retained sync, or its session's ops not replicated) answers 0x80 only
// at its forward_timeout, 15 s in many cluster tests' configurations. Sub
// must see that answer and try again, not give up first: with tries of
// 15 s it failed "no SUBACK" (TestReproClaimChainHeld in a suite run).
func TestSubOutwaitsTheNodesBound(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const nodeBound = 16 * time.Second // forward_timeout 15 s, and the answer's way back
	go serveSubAt(ln, nodeBound)
	c, ack, err := Dial(t, ln.Addr().String(), &paho.Connect{ClientID: "sub-bound", CleanStart: true, KeepAlive: 60})
	if err != nil || ack.ReasonCode != 0 {
		t.Fatalf("connect: %v %v", ack, err)
	}
	c.Sub(t, paho.SubscribeOptions{Topic: "a/b", QoS: 1})
}

// serveSubAt serves one MQTT 5 client: CONNACK at once, the first SUBACK
// 0x80 after d, the later ones granted at once.
func serveSubAt(ln net.Listener, d time.Duration) {
	nc, err := ln.Accept()
	if err != nil {
		return
	}
	defer nc.Close()
	write := func(p interface {
		Encode([]byte, packet.Version) ([]byte, error)
	}) {
		if b, err := p.Encode(nil, packet.V5); err == nil {
			nc.Write(b)
		}
	}
	r := packet.NewReader(nc, 1<<16)
	subs := 0
	for {
		p, err := r.ReadPacket(packet.V5)
		if err != nil {
			return
		}
		switch p := p.(type) {
		case *packet.Connect:
			write(&packet.Connack{})
		case *packet.Subscribe:
			subs++
			code := packet.ReasonCode(1)
			if subs == 1 {
				time.Sleep(d)
				code = packet.UnspecifiedError
			}
			write(&packet.Suback{PacketID: p.PacketID, ReasonCodes: []packet.ReasonCode{code}})
		case *packet.Pingreq:
			write(&packet.Pingresp{})
		}
	}
}
