package packet

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"unsafe"
)

// DecodePublish into one reused Publish gives what Decode gives, and never
// hands out memory that an earlier packet's result still uses.
func TestDecodePublishReuse(t *testing.T) {
	withProps := &Publish{QoS: 1, PacketID: 7, Topic: "a/b", Payload: []byte("one")}
	withProps.Properties.ContentType = "text/plain"
	withProps.Properties.Set(PropContentType)
	withProps.Properties.User = []UserProperty{{"k", "v1"}}
	withProps.Properties.Set(PropUserProperty)
	second := &Publish{QoS: 2, PacketID: 8, Dup: true, Topic: "c", Payload: []byte("two")}
	second.Properties.User = []UserProperty{{"k", "v2"}}
	second.Properties.Set(PropUserProperty)
	cases := []struct {
		v Version
		p *Publish
	}{
		{V311, &Publish{Topic: "t", Payload: []byte("x")}},
		{V311, &Publish{QoS: 2, PacketID: 9, Retain: true, Topic: "t/u", Payload: []byte("y")}},
		{V5, withProps},
		{V5, second},
		{V5, &Publish{Topic: "t"}},
	}
	var scratch Publish
	var kept []*Publish
	for _, tc := range cases {
		b, err := tc.p.Encode(nil, tc.v)
		if err != nil {
			t.Fatal(err)
		}
		h, err := ParseFixedHeader(b)
		if err != nil {
			t.Fatal(err)
		}
		body := b[h.HeaderLen:]
		want, err := Decode(h, body, tc.v)
		if err != nil {
			t.Fatal(err)
		}
		if err := DecodePublish(h, body, tc.v, &scratch); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(&scratch, want) {
			t.Fatalf("DecodePublish = %+v, Decode = %+v", scratch, want)
		}
		cp := scratch // what a caller keeps: fields, not the struct
		kept = append(kept, &cp)
		clear(body) // the read buffer is reused too
	}
	for i, k := range kept {
		if k.Topic != cases[i].p.Topic || string(k.Payload) != string(cases[i].p.Payload) ||
			!reflect.DeepEqual(k.Properties.User, cases[i].p.Properties.User) {
			t.Errorf("packet %d changed after later decodes: %+v", i, k)
		}
	}
	h := FixedHeader{Type: PUBACK, Remaining: 2}
	if err := DecodePublish(h, []byte{0, 1}, V311, &scratch); err == nil {
		t.Error("DecodePublish took a PUBACK")
	}
	h = FixedHeader{Type: PUBLISH, Flags: 6, Remaining: 5} // QoS 3
	if err := DecodePublish(h, []byte{0, 1, 't', 0, 1}, V311, &scratch); err == nil {
		t.Error("DecodePublish took QoS 3")
	}
}

// samePublishAsDecode checks that DecodePublishWith, with and without a
// borrowed payload, through tc twice (a miss, then a hit when the name is
// cached), gives what Decode gives, error included.
func samePublishAsDecode(t *testing.T, h FixedHeader, body []byte, v Version, tc *TopicCache) {
	t.Helper()
	want, werr := Decode(h, body, v)
	wp, _ := want.(*Publish)
	for _, o := range []PublishOptions{{Topics: tc}, {Topics: tc, BorrowPayload: true}, {}} {
		var got Publish
		err := DecodePublishWith(h, body, v, &got, o)
		if !reflect.DeepEqual(err, werr) {
			t.Fatalf("%v %+v: DecodePublishWith error %v, Decode error %v", v, o, err, werr)
		}
		if err == nil && !reflect.DeepEqual(&got, wp) {
			t.Fatalf("%v %+v: DecodePublishWith = %+v, Decode = %+v", v, o, got, wp)
		}
	}
}

func TestDecodePublishWithAsDecode(t *testing.T) {
	long := strings.Repeat("x", maxCachedTopic+1)
	var tc TopicCache
	for _, v := range versions {
		for _, p := range samples(v) {
			if p.Type() != PUBLISH {
				continue
			}
			wire, err := p.Encode(nil, v)
			if err != nil {
				t.Fatal(err)
			}
			h, _ := ParseFixedHeader(wire)
			samePublishAsDecode(t, h, wire[h.HeaderLen:], v, &tc)
		}
		for _, topic := range []string{"a", long, "a/+", "", "a\x00b"} {
			wire, _ := (&Publish{Topic: topic, Payload: []byte("p")}).Encode(nil, v)
			h, _ := ParseFixedHeader(wire)
			samePublishAsDecode(t, h, wire[h.HeaderLen:], v, &tc)
		}
	}
	bad := pkt(0x30, b(0, 2, 0xC3, 0x28), b('p')) // invalid UTF-8 in the topic
	h, _ := ParseFixedHeader(bad)
	samePublishAsDecode(t, h, bad[h.HeaderLen:], V311, &tc)
	samePublishAsDecode(t, h, bad[h.HeaderLen:], V311, &tc)
}

// A repeated topic is one string, a repeated QoS 0 PUBLISH with a borrowed
// payload costs no allocation, and a copied payload one (of the payload
// alone, the topic being cached); the payload copy survives the reuse of
// the buffer it came from, the borrowed view does not (it is the buffer).
func TestDecodePublishWithCachesAndBorrows(t *testing.T) {
	wire, _ := (&Publish{Topic: "sensors/1/state", Payload: []byte("payload")}).Encode(nil, V311)
	h, _ := ParseFixedHeader(wire)
	body := wire[h.HeaderLen:]
	var tc TopicCache
	var first, second Publish
	if err := DecodePublishWith(h, body, V311, &first, PublishOptions{Topics: &tc}); err != nil {
		t.Fatal(err)
	}
	if err := DecodePublishWith(h, body, V311, &second, PublishOptions{Topics: &tc, BorrowPayload: true}); err != nil {
		t.Fatal(err)
	}
	if unsafe.StringData(first.Topic) != unsafe.StringData(second.Topic) {
		t.Error("the same topic twice: two strings, want the cached one")
	}
	if &second.Payload[0] != &body[len(body)-len("payload")] {
		t.Error("borrowed payload is not a view into the body")
	}
	var scratch Publish
	if n := testing.AllocsPerRun(100, func() {
		_ = DecodePublishWith(h, body, V311, &scratch, PublishOptions{Topics: &tc, BorrowPayload: true})
	}); n != 0 {
		t.Errorf("cached topic, borrowed payload: %v allocations per decode, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() {
		_ = DecodePublishWith(h, body, V311, &scratch, PublishOptions{Topics: &tc})
	}); n != 1 {
		t.Errorf("cached topic, copied payload: %v allocations per decode, want 1", n)
	}
	clear(body)
	if first.Topic != "sensors/1/state" || string(first.Payload) != "payload" {
		t.Errorf("after the body's reuse: topic %q payload %q", first.Topic, first.Payload)
	}
}

// A client that never repeats a topic cannot grow the cache: it keeps at
// most topicCacheSize names of at most maxCachedTopic bytes, and every
// decode still returns the right name.
func TestTopicCacheBoundUnderChurn(t *testing.T) {
	var tc TopicCache
	var p Publish
	for i := range 10000 {
		topic := fmt.Sprintf("churn/%d/%s", i, strings.Repeat("y", i%400))
		wire, _ := (&Publish{Topic: topic}).Encode(nil, V5)
		h, _ := ParseFixedHeader(wire)
		if err := DecodePublishWith(h, wire[h.HeaderLen:], V5, &p, PublishOptions{Topics: &tc}); err != nil {
			t.Fatal(err)
		}
		if p.Topic != topic {
			t.Fatalf("decoded topic %q, sent %q", p.Topic, topic)
		}
		held := 0
		for _, s := range tc.names {
			if len(s) > maxCachedTopic {
				t.Fatalf("cache holds a %d-byte name", len(s))
			}
			held += len(s)
		}
		if held > topicCacheSize*maxCachedTopic {
			t.Fatalf("cache holds %d bytes", held)
		}
	}
	if len(tc.names) != topicCacheSize {
		t.Fatalf("cache has %d slots", len(tc.names))
	}
}
