package broker

import (
	"fmt"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// Fan-out shares one encoding among subscribers of the same protocol and
// QoS; each copy must still carry its own packet identifier and complete its
// own QoS flow.
func TestFanOutSharedEncoding(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, Options{})
	var subs []*mqtttest.Client
	for i, v := range []packet.Version{packet.V311, packet.V5, packet.V5, packet.V311, packet.V31} {
		c := dial(t, addr, v)
		c.Connect(&packet.Connect{ClientID: fmt.Sprintf("s%d", i), CleanStart: true})
		c.Subscribe("car/+/state", packet.QoS(1+i%2))
		subs = append(subs, c)
	}
	pub := dial(t, addr, packet.V5)
	pub.Connect(&packet.Connect{ClientID: "pub", CleanStart: true})
	for n := 1; n <= 3; n++ {
		pub.Send(&packet.Publish{Topic: "car/1/state", QoS: 2, PacketID: uint16(n), Payload: []byte(fmt.Sprint("go", n))})
		if _, ok := pub.Next(time.Second).(*packet.Pubrec); !ok {
			t.Fatal("no PUBREC")
		}
		pub.Send(&packet.Pubrel{PacketID: uint16(n)})
		pub.Next(time.Second)
	}
	for i, c := range subs {
		var got []*packet.Publish
		for n := 1; n <= 3; n++ {
			m, ok := c.Next(time.Second).(*packet.Publish)
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
				c.Send(&packet.Puback{PacketID: m.PacketID})
			} else {
				c.Send(&packet.Pubrec{PacketID: m.PacketID})
				if rel, ok := c.Next(time.Second).(*packet.Pubrel); !ok || rel.PacketID != m.PacketID {
					t.Fatalf("sub %d: no PUBREL for %d", i, m.PacketID)
				}
				c.Send(&packet.Pubcomp{PacketID: m.PacketID})
			}
		}
	}
}

// A persistent session collects QoS 1 and 2 messages while offline and gets
// them, in order, after reconnecting; QoS 0 is not queued by default.
func TestOfflineQueue(t *testing.T) {
	t.Parallel()
	for _, v := range []packet.Version{packet.V311, packet.V5} {
		t.Run(v.String(), func(t *testing.T) {
			_, addr := startServer(t, Options{})
			cp := &packet.Connect{ClientID: "app", KeepAlive: 60}
			if v == packet.V5 {
				cp.Properties.SessionExpiry = 60
				cp.Properties.Set(packet.PropSessionExpiry)
			}
			a := dial(t, addr, v)
			a.Connect(cp)
			a.Subscribe("msgs/#", 2)
			a.Send(&packet.Disconnect{})
			a.ExpectClosed(time.Second)

			pub := dial(t, addr, v)
			pub.Connect(&packet.Connect{ClientID: "pub", CleanStart: true})
			for i, q := range []packet.QoS{1, 0, 2, 1} {
				pub.Send(&packet.Publish{Topic: "msgs/x", QoS: q, PacketID: uint16(i + 1), Payload: []byte{byte('a' + i)}})
				if q > 0 {
					pub.Next(time.Second)
				}
			}
			pub.Send(&packet.Pingreq{})
			pub.Next(time.Second)

			b := dial(t, addr, v)
			if ack := b.Connect(cp); !ack.SessionPresent {
				t.Fatal("session not present")
			}
			for _, want := range []struct {
				p string
				q packet.QoS
			}{{"a", 1}, {"c", 2}, {"d", 1}} {
				m, ok := b.Next(time.Second).(*packet.Publish)
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
	t.Parallel()
	_, addr := startServer(t, Options{})
	c := dial(t, addr, packet.V5)
	c.Connect(&packet.Connect{ClientID: "o", CleanStart: true})
	for i, f := range []string{"a/+", "a/#"} {
		s := &packet.Subscribe{PacketID: uint16(i + 1), Subscriptions: []packet.Subscription{{Filter: f, Options: packet.SubOptions{QoS: packet.QoS(i + 1)}}}}
		s.Properties.SubscriptionIDs = []uint32{uint32(10 + i)}
		s.Properties.Set(packet.PropSubscriptionID)
		c.Send(s)
		c.Next(time.Second)
	}
	c.Send(&packet.Publish{Topic: "a/b", QoS: 2, PacketID: 9, Payload: []byte("x")})
	var pubs []*packet.Publish
	deadline := time.Now().Add(500 * time.Millisecond)
	for time.Now().Before(deadline) {
		p, err := c.Read(time.Until(deadline))
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

// Outbound topic aliases stay within the client's Topic Alias Maximum: the
// first message on a topic carries topic and alias, later ones the alias
// alone; topics beyond the maximum go without alias [MQTT-3.3.2-17..].
func TestOutboundTopicAlias(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, Options{})
	c := dial(t, addr, packet.V5)
	cp := &packet.Connect{ClientID: "alias", CleanStart: true}
	cp.Properties.TopicAliasMaximum = 2
	cp.Properties.Set(packet.PropTopicAliasMaximum)
	c.Connect(cp)
	c.Subscribe("#", 0)
	pub := dial(t, addr, packet.V311)
	pub.Connect(&packet.Connect{ClientID: "p", CleanStart: true})
	want := []struct {
		topic, wire string
		alias       uint16
	}{{"a", "a", 1}, {"b", "b", 2}, {"c", "c", 0}, {"a", "", 1}, {"c", "c", 0}}
	for _, w := range want {
		pub.Send(&packet.Publish{Topic: w.topic, Payload: []byte(w.topic)})
	}
	for i, w := range want {
		m, ok := c.Next(time.Second).(*packet.Publish)
		if !ok || string(m.Payload) != w.topic || m.Topic != w.wire || m.Properties.TopicAlias != w.alias ||
			m.Properties.Has(packet.PropTopicAlias) != (w.alias != 0) {
			t.Errorf("message %d: got topic %q alias %d, want %q alias %d", i, m.Topic, m.Properties.TopicAlias, w.wire, w.alias)
		}
	}
}
