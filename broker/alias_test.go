package broker

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/roost-mqtt/roost/packet"
)

// heapAfterGC is the live heap once the collector has run.
func heapAfterGC() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC() // the first may leave finalizer-reachable garbage
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// Topic aliases keep copies of their topics, not views into the packets
// they came in: with a publisher that sets an inbound alias per topic and a
// subscriber that announces a large Topic Alias Maximum (so every delivery
// gets a new outbound alias), 300 messages of 100 KiB on distinct topics
// must not leave their payloads alive while both connections stay open.
// (Before the copies, the heap kept about 30 MiB after GC here.)
func TestTopicAliasesDoNotPinPayloads(t *testing.T) {
	// Serial: it measures the whole process's heap, which parallel tests
	// would fill.
	const n, size = 300, 100 << 10
	_, addr := startServer(t, Options{TopicAliasMaximum: 1000, MaxPacketSize: 1 << 20})
	sub := dial(t, addr, packet.V5)
	cp := &packet.Connect{ClientID: "alias-sub", CleanStart: true}
	cp.Properties.TopicAliasMaximum = 1000
	cp.Properties.Set(packet.PropTopicAliasMaximum)
	sub.Connect(cp)
	sub.Subscribe("pin/#", 0)
	pub := dial(t, addr, packet.V5)
	pub.Connect(&packet.Connect{ClientID: "alias-pub", CleanStart: true})

	before := heapAfterGC()
	payload := make([]byte, size)
	// One message at a time, so the slow-consumer policy (QoS 0 dropped
	// over 4 MiB unwritten) never applies.
	for i := range n {
		p := &packet.Publish{Topic: fmt.Sprintf("pin/%d", i), Payload: payload}
		p.Properties.TopicAlias = uint16(i + 1)
		p.Properties.Set(packet.PropTopicAlias)
		pub.Send(p)
		got, ok := sub.Next(10 * time.Second).(*packet.Publish)
		if !ok || len(got.Payload) != size || !got.Properties.Has(packet.PropTopicAlias) {
			t.Fatalf("message %d: got %+v, want a PUBLISH of %d bytes with a topic alias", i, got, size)
		}
	}
	// Both connections are still open: their alias maps are alive.
	sub.Send(&packet.Pingreq{})
	if _, ok := sub.Next(5 * time.Second).(*packet.Pingresp); !ok {
		t.Fatal("subscriber: no PINGRESP")
	}
	pub.Send(&packet.Pingreq{})
	if _, ok := pub.Next(5 * time.Second).(*packet.Pingresp); !ok {
		t.Fatal("publisher: no PINGRESP")
	}
	after := heapAfterGC()
	grown := int64(after) - int64(before)
	t.Logf("heap after GC: %d KiB before, %d KiB after the deliveries (%+d KiB)", before>>10, after>>10, grown>>10)
	if limit := int64(n * size / 4); grown > limit {
		t.Fatalf("heap grew by %d KiB after GC, over %d KiB: payloads are kept alive", grown>>10, limit>>10)
	}
	runtime.KeepAlive(payload)
}

// A subscription keeps a copy of its filter, not a view into the SUBSCRIBE
// it came in: 200 subscriptions, each from a SUBSCRIBE carrying a 32 KiB
// User Property, must not keep those packets alive. (Before the copy the
// heap kept about 6.5 MiB after GC here.)
func TestSubscriptionsDoNotPinPackets(t *testing.T) {
	// Serial: it measures the whole process's heap, which parallel tests
	// would fill.
	const n, size = 200, 32 << 10
	_, addr := startServer(t, Options{})
	c := dial(t, addr, packet.V5)
	c.Connect(&packet.Connect{ClientID: "pin-subs", CleanStart: true})
	big := strings.Repeat("x", size)
	before := heapAfterGC()
	for i := range n {
		sp := &packet.Subscribe{PacketID: uint16(i + 1), Subscriptions: []packet.Subscription{{Filter: fmt.Sprintf("pin/%d/#", i)}}}
		sp.Properties.User = []packet.UserProperty{{Key: "pad", Value: big}}
		sp.Properties.Set(packet.PropUserProperty)
		c.Send(sp)
		if ack, ok := c.Next(5 * time.Second).(*packet.Suback); !ok || ack.ReasonCodes[0] != 0 {
			t.Fatalf("subscription %d: got %+v", i, ack)
		}
	}
	after := heapAfterGC()
	grown := int64(after) - int64(before)
	t.Logf("heap after GC: %d KiB before, %d KiB after %d subscriptions (%+d KiB)", before>>10, after>>10, n, grown>>10)
	if limit := int64(n * size / 4); grown > limit {
		t.Fatalf("heap grew by %d KiB after GC, over %d KiB: SUBSCRIBE packets are kept alive", grown>>10, limit>>10)
	}
}

// A will keeps copies of its topic, payload and properties, not views into
// the CONNECT, which holds the password too and would otherwise live as
// long as the session keeps the will.
func TestWillIsACopy(t *testing.T) {
	t.Parallel()
	cp := &packet.Connect{ProtocolVersion: packet.V5, ClientID: "w", WillFlag: true, WillTopic: "w/t", WillPayload: []byte("gone"),
		UsernameFlag: true, Username: "u", PasswordFlag: true, Password: []byte("secret")}
	cp.WillProperties.ContentType = "text/plain"
	cp.WillProperties.Set(packet.PropContentType)
	cp.WillProperties.CorrelationData = []byte("c")
	cp.WillProperties.Set(packet.PropCorrelationData)
	cp.WillProperties.User = []packet.UserProperty{{Key: "k", Value: "v"}}
	cp.WillProperties.Set(packet.PropUserProperty)
	b, err := cp.Encode(nil, packet.V5)
	if err != nil {
		t.Fatal(err)
	}
	h, err := packet.ParseFixedHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	p, err := packet.Decode(h, b[h.HeaderLen:], packet.V5)
	if err != nil {
		t.Fatal(err)
	}
	dec := p.(*packet.Connect)
	m := newWill(dec, "w").msg
	shares := func(a, b string) bool { return len(a) > 0 && unsafe.StringData(a) == unsafe.StringData(b) }
	switch {
	case m.Topic != "w/t" || string(m.Payload) != "gone" || m.Props == nil:
		t.Fatalf("will %+v", m)
	case shares(m.Topic, dec.WillTopic), &m.Payload[0] == &dec.WillPayload[0]:
		t.Fatal("will topic or payload is a view into the CONNECT")
	case shares(m.Props.ContentType, dec.WillProperties.ContentType), &m.Props.CorrelationData[0] == &dec.WillProperties.CorrelationData[0],
		shares(m.Props.User[0].Key, dec.WillProperties.User[0].Key), shares(m.Props.User[0].Value, dec.WillProperties.User[0].Value):
		t.Fatal("will properties are views into the CONNECT")
	}
}
