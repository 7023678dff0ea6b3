package broker

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// A DISCONNECT the server sends is the last packet on the connection
// [MQTT-3.14.4-1], also for a subscriber that messages keep arriving for:
// deliveries routed to it while its reader ends (here because it sent a
// malformed packet) must not follow the DISCONNECT. Two publishers flood
// the subscriber's topic; each round a subscriber sends a PUBLISH with
// QoS 3 and reads to the end of the stream.
func TestNothingAfterServerDisconnect(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, Options{})
	var stop atomic.Bool
	var flooders sync.WaitGroup
	for i := range 2 {
		pub := dial(t, addr, packet.V5)
		pub.Connect(&packet.Connect{ClientID: "flooder" + string(rune('a'+i)), CleanStart: true})
		b, _ := (&packet.Publish{Topic: "flood/x", Payload: make([]byte, 64)}).Encode(nil, packet.V5)
		flooders.Add(1)
		go func() {
			defer flooders.Done()
			for !stop.Load() {
				if _, err := pub.NC.Write(b); err != nil {
					return
				}
				time.Sleep(50 * time.Microsecond)
			}
		}()
	}
	defer func() { stop.Store(true); flooders.Wait() }()

	const rounds = 40
	after := 0
	for i := range rounds {
		c := dial(t, addr, packet.V5)
		c.Connect(&packet.Connect{ClientID: "sub", CleanStart: true})
		c.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "flood/#"}}})
		for {
			if _, ok := c.Next(5 * time.Second).(*packet.Suback); ok {
				break
			}
		}
		c.Next(5 * time.Second) // deliveries flow
		// A PUBLISH with QoS 3 is malformed [MQTT-3.3.1-4].
		if _, err := c.NC.Write([]byte{0x36, 0x03, 0, 1, 'x'}); err != nil {
			t.Fatal(err)
		}
		var dis *packet.Disconnect
		for {
			p, err := c.Read(5 * time.Second)
			if err != nil {
				break // the end of the stream (or a reset after it)
			}
			if d, ok := p.(*packet.Disconnect); ok && dis == nil {
				dis = d
				continue
			}
			if dis != nil {
				after++
				t.Errorf("round %d: %s after DISCONNECT 0x%02X", i, p.Type(), byte(dis.ReasonCode))
				break
			}
		}
		if dis == nil || dis.ReasonCode != packet.MalformedPacket {
			t.Fatalf("round %d: DISCONNECT %+v, want 0x81", i, dis)
		}
		c.NC.Close()
	}
	if after > 0 {
		t.Errorf("%d of %d rounds had packets after the server's DISCONNECT", after, rounds)
	}
}
