package packet

import (
	"reflect"
	"testing"
)

// dirtyConnect is a Connect with every kind of field set, so a decode into
// it shows whether anything of an earlier packet is left behind.
func dirtyConnect() Connect {
	c := Connect{ProtocolName: "stale", ProtocolVersion: V5, Bridge: true, CleanStart: true, KeepAlive: 9,
		ClientID: "stale", WillFlag: true, WillQoS: 2, WillRetain: true, WillTopic: "stale/will",
		WillPayload: []byte("stale"), UsernameFlag: true, Username: "stale", PasswordFlag: true, Password: []byte("stale")}
	c.Properties.SessionExpiry = 77
	c.Properties.Set(PropSessionExpiry)
	c.Properties.User = []UserProperty{{"stale", "stale"}}
	c.Properties.Set(PropUserProperty)
	c.WillProperties.WillDelay = 5
	c.WillProperties.Set(PropWillDelay)
	return c
}

// sameAsDecode fails t unless DecodeConnect into scratch gives what Decode
// gives for the same bytes: the same error and the same packet, or a zero
// Connect where Decode returns none.
func sameAsDecode(t *testing.T, h FixedHeader, body []byte, scratch *Connect) {
	t.Helper()
	want, werr := Decode(h, body, V311)
	err := DecodeConnect(h, body, scratch)
	if !reflect.DeepEqual(err, werr) {
		t.Fatalf("DecodeConnect error %v, Decode error %v", err, werr)
	}
	wc, _ := want.(*Connect)
	if wc == nil {
		wc = &Connect{}
	}
	if !reflect.DeepEqual(scratch, wc) {
		t.Fatalf("DecodeConnect = %+v, Decode = %+v", scratch, wc)
	}
}

// DecodeConnect into one reused Connect gives what Decode gives, errors
// included, and never hands out memory an earlier packet's result uses.
func TestDecodeConnectReuse(t *testing.T) {
	v5 := &Connect{ProtocolVersion: V5, ClientID: "five", CleanStart: true, KeepAlive: 30,
		WillFlag: true, WillQoS: 1, WillTopic: "w/t", WillPayload: []byte("bye"),
		UsernameFlag: true, Username: "u", PasswordFlag: true, Password: []byte("p")}
	v5.Properties.SessionExpiry = 3600
	v5.Properties.Set(PropSessionExpiry)
	v5.Properties.User = []UserProperty{{"k", "v"}}
	v5.Properties.Set(PropUserProperty)
	v5.WillProperties.ContentType = "text/plain"
	v5.WillProperties.Set(PropContentType)
	cases := []*Connect{
		{ProtocolVersion: V311, ClientID: "a", CleanStart: true, KeepAlive: 60},
		v5,
		{ProtocolVersion: V31, ClientID: "old", UsernameFlag: true, Username: "u"},
		{ProtocolVersion: V311, ClientID: "br", Bridge: true},
		{ProtocolVersion: V5},
	}
	scratch := dirtyConnect()
	var kept []Connect
	for _, c := range cases {
		b, err := c.Encode(nil, c.ProtocolVersion)
		if err != nil {
			t.Fatal(err)
		}
		h, err := ParseFixedHeader(b)
		if err != nil {
			t.Fatal(err)
		}
		body := b[h.HeaderLen:]
		sameAsDecode(t, h, body, &scratch)
		kept = append(kept, scratch) // what a caller keeps: fields, not the struct
		clear(body)                  // the read buffer is reused too
	}
	for i, k := range kept {
		c := cases[i]
		if k.ClientID != c.ClientID || k.Username != c.Username || string(k.Password) != string(c.Password) ||
			k.WillTopic != c.WillTopic || string(k.WillPayload) != string(c.WillPayload) ||
			!reflect.DeepEqual(k.Properties.User, c.Properties.User) {
			t.Errorf("CONNECT %d changed after later decodes: %+v", i, k)
		}
	}
}

// DecodeConnect refuses what Decode refuses, with the same error, and
// leaves what a server answers with: the protocol level when it was read.
func TestDecodeConnectErrors(t *testing.T) {
	cases := []struct {
		name  string
		flags byte
		body  []byte
		level Version // what scratch must hold afterwards
	}{
		{"truncated name", 0, []byte{0, 4, 'M', 'Q'}, 0},
		{"unsupported level", 0, []byte{0, 4, 'M', 'Q', 'T', 'T', 9, 2, 0, 60, 0, 1, 'c'}, 9},
		{"reserved connect flag", 0, []byte{0, 4, 'M', 'Q', 'T', 'T', 4, 3, 0, 60, 0, 1, 'c'}, V311},
		{"will QoS 3", 0, []byte{0, 4, 'M', 'Q', 'T', 'T', 5, 0x1C, 0, 60, 0, 0, 1, 'c'}, V5},
		{"fixed header flags", 1, []byte{0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 60, 0, 1, 'c'}, 0},
		{"trailing bytes", 0, []byte{0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 60, 0, 1, 'c', 0}, V311},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := FixedHeader{Type: CONNECT, Flags: tc.flags, Remaining: len(tc.body)}
			scratch := dirtyConnect()
			sameAsDecode(t, h, tc.body, &scratch)
			if scratch.ProtocolVersion != tc.level {
				t.Errorf("protocol level %d after the error, want %d", scratch.ProtocolVersion, tc.level)
			}
			if err := DecodeConnect(h, tc.body, &scratch); err == nil {
				t.Error("no error")
			}
		})
	}
	scratch := dirtyConnect()
	if err := DecodeConnect(FixedHeader{Type: PUBLISH, Remaining: 3}, []byte{0, 1, 't'}, &scratch); err == nil {
		t.Error("DecodeConnect took a PUBLISH")
	}
	if err := DecodeConnect(FixedHeader{Type: CONNECT, Remaining: 5}, []byte{0, 1}, &scratch); err == nil {
		t.Error("DecodeConnect took a body shorter than its remaining length")
	}
}
