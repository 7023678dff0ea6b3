package broker

import (
	"fmt"
	"runtime"
	"testing"
	"unsafe"

	"github.com/roost-mqtt/roost/packet"
)

// A Message is held per retained topic and per queued message: a field
// that grows it past its 112-byte allocation class costs a million
// retained messages 16 MiB or more. Grow it only on purpose.
func TestMessageSize(t *testing.T) {
	t.Parallel()
	if n := unsafe.Sizeof(Message{}); n > 112 {
		t.Errorf("Message is %d bytes, want at most 112", n)
	}
}

// Every client holds a conn and a session, idle or not: a field that
// grows either past its allocation class (288 and 208 bytes) costs every
// idle connection 32 or 16 bytes more (broker/DESIGN.md, "Memory per
// connection"). Move rarely used fields to a side struct instead.
func TestConnSessionSize(t *testing.T) {
	t.Parallel()
	if n := unsafe.Sizeof(conn{}); n > 288 {
		t.Errorf("conn is %d bytes, want at most 288", n)
	}
	if n := unsafe.Sizeof(session{}); n > 208 {
		t.Errorf("session is %d bytes, want at most 208", n)
	}
}

// BenchmarkNewMessage is the per-message cost of turning a decoded PUBLISH
// into a routed Message: a plain one (no properties, the common case) and
// one with a Content Type and a User Property.
func BenchmarkNewMessage(b *testing.B) {
	s := &Server{}
	plain := &packet.Publish{Topic: "sensors/1/2/state", QoS: 1, PacketID: 1, Payload: make([]byte, 64)}
	props := &packet.Publish{Topic: "sensors/1/2/state", QoS: 1, PacketID: 1, Payload: make([]byte, 64)}
	props.Properties.ContentType = "text/plain"
	props.Properties.Set(packet.PropContentType)
	props.Properties.User = []packet.UserProperty{{Key: "k", Value: "v"}}
	props.Properties.Set(packet.PropUserProperty)
	for _, bc := range []struct {
		name string
		p    *packet.Publish
	}{{"plain", plain}, {"props", props}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			var sink *Message
			for b.Loop() {
				sink = s.newMessage(bc.p, "client")
			}
			_ = sink
		})
	}
}

// BenchmarkRetainedHeap is the live heap each retained message costs, as
// restore builds them (topic, 64-byte payload, no properties).
func BenchmarkRetainedHeap(b *testing.B) {
	const n = 100000
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		r := newRetainer(nil)
		for i := range n {
			name := fmt.Sprintf("sensors/%d/%d/state", i/1000, i%1000)
			r.msgs.Set(name, &Message{ID: uint64(i + 1), Topic: name, Payload: make([]byte, 64), QoS: 1, Retain: true})
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "heap-B/retained")
		runtime.KeepAlive(r)
	}
}
