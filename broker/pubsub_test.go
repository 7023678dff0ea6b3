package broker

import (
	"fmt"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

func subscribe(t *testing.T, c *testClient, filter string, qos packet.QoS) {
	t.Helper()
	c.send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: filter, Options: packet.SubOptions{QoS: qos}}}})
	if ack, ok := c.next(time.Second).(*packet.Suback); !ok || ack.ReasonCodes[0] != packet.ReasonCode(qos) {
		t.Fatalf("SUBACK %+v", ack)
	}
}

// Fan-out shares one encoding among subscribers of the same protocol and
// QoS; each copy must still carry its own packet identifier and complete its
// own QoS flow.
func TestFanOutSharedEncoding(t *testing.T) {
	_, addr := startServer(t, Options{})
	var subs []*testClient
	for i, v := range []packet.Version{packet.V311, packet.V5, packet.V5, packet.V311, packet.V31} {
		c := dial(t, addr, v)
		c.connect(&packet.Connect{ClientID: fmt.Sprintf("s%d", i), CleanStart: true})
		subscribe(t, c, "car/+/state", packet.QoS(1+i%2))
		subs = append(subs, c)
	}
	pub := dial(t, addr, packet.V5)
	pub.connect(&packet.Connect{ClientID: "pub", CleanStart: true})
	for n := 1; n <= 3; n++ {
		pub.send(&packet.Publish{Topic: "car/1/state", QoS: 2, PacketID: uint16(n), Payload: []byte(fmt.Sprint("go", n))})
		if _, ok := pub.next(time.Second).(*packet.Pubrec); !ok {
			t.Fatal("no PUBREC")
		}
		pub.send(&packet.Pubrel{PacketID: uint16(n)})
		pub.next(time.Second)
	}
	for i, c := range subs {
		var got []*packet.Publish
		for n := 1; n <= 3; n++ {
			m, ok := c.next(time.Second).(*packet.Publish)
			want := fmt.Sprint("go", n)
			if !ok || string(m.Payload) != want || m.Topic != "car/1/state" || m.QoS != packet.QoS(1+i%2) || m.Retain {
				t.Fatalf("sub %d message %d: %+v", i, n, m)
			}
			if m.PacketID != uint16(n) {
				t.Errorf("sub %d: packet id %d, want %d", i, m.PacketID, n)
			}
			got = append(got, m)
		}
		for _, m := range got {
			if m.QoS == 1 {
				c.send(&packet.Puback{PacketID: m.PacketID})
			} else {
				c.send(&packet.Pubrec{PacketID: m.PacketID})
				if rel, ok := c.next(time.Second).(*packet.Pubrel); !ok || rel.PacketID != m.PacketID {
					t.Fatalf("sub %d: no PUBREL for %d", i, m.PacketID)
				}
				c.send(&packet.Pubcomp{PacketID: m.PacketID})
			}
		}
	}
}

// A persistent session collects QoS 1 and 2 messages while offline and gets
// them, in order, after reconnecting; QoS 0 is not queued by default.
func TestOfflineQueue(t *testing.T) {
	for _, v := range []packet.Version{packet.V311, packet.V5} {
		t.Run(v.String(), func(t *testing.T) {
			_, addr := startServer(t, Options{})
			cp := &packet.Connect{ClientID: "app", KeepAlive: 60}
			if v == packet.V5 {
				cp.Properties.SessionExpiry = 60
				cp.Properties.Set(packet.PropSessionExpiry)
			}
			a := dial(t, addr, v)
			a.connect(cp)
			subscribe(t, a, "msgs/#", 2)
			a.send(&packet.Disconnect{})
			a.expectClosed(time.Second)

			pub := dial(t, addr, v)
			pub.connect(&packet.Connect{ClientID: "pub", CleanStart: true})
			for i, q := range []packet.QoS{1, 0, 2, 1} {
				pub.send(&packet.Publish{Topic: "msgs/x", QoS: q, PacketID: uint16(i + 1), Payload: []byte{byte('a' + i)}})
				if q > 0 {
					pub.next(time.Second)
				}
			}
			pub.send(&packet.Pingreq{})
			pub.next(time.Second)

			b := dial(t, addr, v)
			if ack := b.connect(cp); !ack.SessionPresent {
				t.Fatal("session not present")
			}
			for _, want := range []struct {
				p string
				q packet.QoS
			}{{"a", 1}, {"c", 2}, {"d", 1}} {
				m, ok := b.next(time.Second).(*packet.Publish)
				if !ok || string(m.Payload) != want.p || m.QoS != want.q {
					t.Fatalf("got %+v, want payload %s qos %d", m, want.p, want.q)
				}
			}
		})
	}
}

// One client with overlapping subscriptions gets one copy at the highest
// granted QoS, carrying every subscription identifier (MQTT 5).
func TestOverlappingSubscriptions(t *testing.T) {
	_, addr := startServer(t, Options{})
	c := dial(t, addr, packet.V5)
	c.connect(&packet.Connect{ClientID: "o", CleanStart: true})
	for i, f := range []string{"a/+", "a/#"} {
		s := &packet.Subscribe{PacketID: uint16(i + 1), Subscriptions: []packet.Subscription{{Filter: f, Options: packet.SubOptions{QoS: packet.QoS(i + 1)}}}}
		s.Properties.SubscriptionIDs = []uint32{uint32(10 + i)}
		s.Properties.Set(packet.PropSubscriptionID)
		c.send(s)
		c.next(time.Second)
	}
	c.send(&packet.Publish{Topic: "a/b", QoS: 2, PacketID: 9, Payload: []byte("x")})
	var pubs []*packet.Publish
	deadline := time.Now().Add(500 * time.Millisecond)
	for time.Now().Before(deadline) {
		p, err := c.read(time.Until(deadline))
		if err != nil {
			break
		}
		if m, ok := p.(*packet.Publish); ok {
			pubs = append(pubs, m)
		}
	}
	if len(pubs) != 1 {
		t.Fatalf("got %d copies, want 1", len(pubs))
	}
	if pubs[0].QoS != 2 || len(pubs[0].Properties.SubscriptionIDs) != 2 {
		t.Errorf("copy %+v: want QoS 2 with ids 10 and 11", pubs[0])
	}
}
