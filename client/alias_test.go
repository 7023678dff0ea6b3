package client

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/packet"
)

// heapAfterGC is the live heap once the collector has run.
func heapAfterGC() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// The client's inbound topic aliases keep copies of their topics, not views
// into the packets they came in: a subscriber announcing a large Topic
// Alias Maximum gets an alias for each of 300 distinct topics (Roost assigns
// them), and the 100 KiB payloads must not stay alive after their handlers
// returned. Before the copy, the heap kept about 30 MiB after GC here.
func TestInboundAliasesDoNotPinPayloads(t *testing.T) {
	// Serial: it measures the whole process's heap, which parallel tests
	// would fill.
	const n, size = 300, 100 << 10
	tg := startRoost(t, broker.Options{MaxPacketSize: 1 << 20})
	ctx := testCtx(t, 30*time.Second)
	got := make(chan int, 1)
	sub := newClient(t, tg.URL(), packet.V5, func(o *Options) { o.TopicAliasMaximum = 1000 })
	if _, err := sub.Subscribe(ctx, Subscription{Filter: "pin/#", Handler: func(m *Message) {
		if len(m.Payload) == size {
			got <- len(m.Payload) // the handler keeps nothing
		}
	}}); err != nil {
		t.Fatal(err)
	}
	pub := newClient(t, tg.URL(), packet.V5, nil)

	before := heapAfterGC()
	payload := make([]byte, size)
	for i := range n {
		// One at a time: QoS 0 for a slow consumer may be dropped by
		// design.
		if _, err := pub.Publish(ctx, Message{Topic: fmt.Sprintf("pin/%d", i), Payload: payload}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		select {
		case <-got:
		case <-time.After(10 * time.Second):
			t.Fatalf("message %d not received within 10s", i)
		}
	}
	after := heapAfterGC()
	grown := int64(after) - int64(before)
	t.Logf("heap after GC: %d KiB before, %d KiB after the deliveries (%+d KiB)", before>>10, after>>10, grown>>10)
	if limit := int64(n * size / 4); grown > limit {
		t.Fatalf("heap grew by %d KiB after GC, over %d KiB: payloads are kept alive", grown>>10, limit>>10)
	}
	if !sub.Connected() {
		t.Fatal("subscriber disconnected: its aliases were not measured")
	}
	runtime.KeepAlive(payload)
}
