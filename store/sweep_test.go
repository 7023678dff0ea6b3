package store

import (
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/brokertest"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// Disk usage follows live data: a queued message whose Message Expiry
// passes while its session is offline is deleted from the store by the
// broker's sweep, without the client coming back; when the session itself
// expires, its subscriptions, queue and the message bodies only it referred
// to are deleted too.
func TestExpiredMessagesAndSessionsLeaveTheStore(t *testing.T) {
	t.Parallel()
	d := openT(t, t.TempDir(), DiskOptions{})
	s, addr := brokertest.Start(t, broker.Options{Store: d, ExpirySweep: 20 * time.Millisecond, Logger: discard()})

	sub := mqtttest.Dial(t, addr, packet.V5)
	cp := &packet.Connect{ClientID: "away", KeepAlive: 60}
	cp.Properties.SessionExpiry = 3
	cp.Properties.Set(packet.PropSessionExpiry)
	sub.Connect(cp)
	sub.Subscribe("e/#", 1)
	sub.Send(&packet.Disconnect{})
	sub.ExpectClosed(time.Second)

	pub := mqtttest.Dial(t, addr, packet.V5)
	pub.Connect(&packet.Connect{ClientID: "pub", CleanStart: true})
	short := &packet.Publish{Topic: "e/short", QoS: 1, PacketID: 1, Payload: []byte("gone soon")}
	short.Properties.MessageExpiry = 1
	short.Properties.Set(packet.PropMessageExpiry)
	pub.Send(short)
	pub.Send(&packet.Publish{Topic: "e/long", QoS: 1, PacketID: 2, Payload: []byte("kept")})
	for range 2 {
		if _, ok := pub.Next(time.Second).(*packet.Puback); !ok {
			t.Fatal("no PUBACK")
		}
	}
	count := func(kind byte) int {
		d.Wait(d.Append()) // everything the broker appended is committed
		n := 0
		if err := d.each(kind, func(_, _ []byte) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if q, m := count(kindQueue), count(kindMessage); q != 2 || m != 2 {
		t.Fatalf("after publishing: %d queue entries and %d messages stored, want 2 and 2", q, m)
	}
	mqtttest.Eventually(t, 3*time.Second, func() bool { return count(kindQueue) == 1 && count(kindMessage) == 1 })
	if n := s.Stats().Dropped[broker.DropExpired]; n != 1 {
		t.Errorf("%d messages dropped as expired, want 1", n)
	}
	mqtttest.Eventually(t, 5*time.Second, func() bool {
		return count(kindSession) == 0 && count(kindSub) == 0 && count(kindQueue) == 0 && count(kindMessage) == 0
	})
}
