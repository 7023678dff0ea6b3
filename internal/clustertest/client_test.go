package clustertest

import (
	"fmt"
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

// TestCleanupWhileConnecting: a test can end while one of its clients
// still waits for a CONNACK in another goroutine (harness.
// ResumeInBackground's loop, a repro test's background TryConnect), and
// its cleanup then runs beside paho's Connect. paho.golang v0.23.0's
// Disconnect cancels the client and waits; a CONNACK read after that
// starts the client's shutdown at once (Connect's context.AfterFunc on a
// cancelled context), whose workers.Wait races with the workers.Add
// Connect goes on to make: "race detected" in the test process
// (bench/jepsen/RESULTS.md runs25, What is left 9; paho26). Each round's
// server answers the CONNECT only when the client closes or disconnects.
func TestCleanupWhileConnecting(t *testing.T) {
	t.Parallel()
	for i := range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		connected := make(chan struct{})
		go serveConnackLate(ln, connected)
		dialed := make(chan error, 1)
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			go func() {
				_, _, err := Dial(t, ln.Addr().String(), &paho.Connect{ClientID: "late", CleanStart: true, KeepAlive: 30})
				dialed <- err
			}()
			select {
			case <-connected: // the subtest ends with the CONNECT unanswered
			case <-time.After(ConnectBound):
				t.Error("no CONNECT")
			}
		})
		select {
		case <-dialed:
		case <-time.After(2 * ConnectBound):
			t.Fatal("Dial did not return after its test's cleanup")
		}
		ln.Close()
	}
}

// serveConnackLate serves one MQTT 5 client: after its CONNECT it closes
// connected and waits for the next packet (the client's DISCONNECT) or
// the end of the connection, then sends the CONNACK.
func serveConnackLate(ln net.Listener, connected chan<- struct{}) {
	nc, err := ln.Accept()
	if err != nil {
		close(connected)
		return
	}
	defer nc.Close()
	r := packet.NewReader(nc, 1<<16)
	if _, err := r.ReadPacket(packet.V5); err != nil {
		close(connected)
		return
	}
	close(connected)
	nc.SetReadDeadline(time.Now().Add(ConnectBound))
	_, _ = r.ReadPacket(packet.V5)
	if b, err := (&packet.Connack{}).Encode(nil, packet.V5); err == nil {
		nc.Write(b)
	}
	nc.SetReadDeadline(time.Now().Add(ConnectBound))
	for {
		if _, err := r.ReadPacket(packet.V5); err != nil {
			return
		}
	}
}
