package broker

import (
	"fmt"
	"runtime"
	"testing"
	"time"

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
