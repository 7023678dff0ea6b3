package packet

import (
	"reflect"
	"testing"
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
