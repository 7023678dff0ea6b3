package packet

import (
	"bytes"
	"fmt"
	"io"
	"testing"
)

func benchPublish() *Publish {
	p := &Publish{QoS: 1, Topic: "sensors/building-1/floor-2/temperature", PacketID: 42,
		Payload: bytes.Repeat([]byte{'x'}, 256)}
	p.Properties.Set(PropMessageExpiry)
	p.Properties.MessageExpiry = 60
	p.Properties.Set(PropContentType)
	p.Properties.ContentType = "application/json"
	return p
}

func BenchmarkPublishEncode(b *testing.B) {
	for _, v := range versions {
		b.Run(v.String(), func(b *testing.B) {
			p := benchPublish()
			buf := make([]byte, 0, 1024)
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if buf, err = p.Encode(buf[:0], v); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(int64(len(buf)))
		})
	}
}

func BenchmarkPublishDecode(b *testing.B) {
	for _, v := range versions {
		b.Run(v.String(), func(b *testing.B) {
			wire, _ := benchPublish().Encode(nil, v)
			h, _ := ParseFixedHeader(wire)
			body := wire[h.HeaderLen:]
			b.SetBytes(int64(len(wire)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Decode(h, body, v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// loopReader serves the same bytes forever, as a socket full of PUBLISHes.
type loopReader struct {
	data []byte
	off  int
}

func (l *loopReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], l.data[l.off:])
		n += c
		l.off = (l.off + c) % len(l.data)
	}
	return n, nil
}

func BenchmarkReaderPublish(b *testing.B) {
	wire, _ := benchPublish().Encode(nil, V5)
	r := NewReader(&loopReader{data: wire}, 0)
	b.SetBytes(int64(len(wire)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.ReadPacket(V5); err != nil {
			b.Fatal(err)
		}
	}
}

// Encode into a presized buffer must not allocate.
func TestPublishEncodeAllocs(t *testing.T) {
	p := benchPublish()
	buf := make([]byte, 0, 1024)
	for _, v := range versions {
		allocs := testing.AllocsPerRun(100, func() { buf, _ = p.Encode(buf[:0], v) })
		if allocs != 0 {
			t.Errorf("%v: %v allocs per Encode, want 0", v, allocs)
		}
	}
}

func TestPublishDecodeAllocs(t *testing.T) {
	wire, _ := benchPublish().Encode(nil, V5)
	h, _ := ParseFixedHeader(wire)
	allocs := testing.AllocsPerRun(100, func() { _, _ = Decode(h, wire[h.HeaderLen:], V5) })
	if allocs > 3 {
		t.Errorf("%v allocs per PUBLISH Decode, want <= 3", allocs)
	}
}

var _ io.Reader = (*loopReader)(nil)

// BenchmarkPublishDecodeQoS0 is a broker reader decoding a repeated QoS 0
// PUBLISH (64-byte payload, no properties) into one reused Publish: as
// DecodePublish does (one copy of the body), and as DecodePublishWith does
// with a TopicCache, the payload copied or borrowed.
func BenchmarkPublishDecodeQoS0(b *testing.B) {
	benchPublishDecode(b, "sensors/building-1/floor-2/temperature")
}

// BenchmarkPublishDecodeChurn is the TopicCache's worst case: a client
// cycling through one topic more than the cache holds, so that every name
// is a miss (and a string of its own), against DecodePublish's one copy.
func BenchmarkPublishDecodeChurn(b *testing.B) {
	var topics []string
	for i := range topicCacheSize + 1 {
		topics = append(topics, fmt.Sprintf("sensors/building-1/floor-2/temperature-%d", i))
	}
	benchPublishDecode(b, topics...)
}

// benchPublishDecode decodes QoS 0 PUBLISH packets on topics, in turn,
// with DecodePublish and with DecodePublishWith's modes.
func benchPublishDecode(b *testing.B, topics ...string) {
	var bodies [][]byte
	var hs []FixedHeader
	for _, topic := range topics {
		wire, _ := (&Publish{Topic: topic, Payload: make([]byte, 64)}).Encode(nil, V311)
		h, _ := ParseFixedHeader(wire)
		hs, bodies = append(hs, h), append(bodies, wire[h.HeaderLen:])
	}
	var tc TopicCache
	for _, bc := range []struct {
		name string
		o    *PublishOptions
	}{
		{"DecodePublish", nil},
		{"cached-topic", &PublishOptions{Topics: &tc}},
		{"cached-topic-borrowed", &PublishOptions{Topics: &tc, BorrowPayload: true}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var p Publish
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if bc.o == nil {
					err = DecodePublish(hs[i], bodies[i], V311, &p)
				} else {
					err = DecodePublishWith(hs[i], bodies[i], V311, &p, *bc.o)
				}
				if err != nil {
					b.Fatal(err)
				}
				i = (i + 1) % len(bodies)
			}
		})
	}
}
