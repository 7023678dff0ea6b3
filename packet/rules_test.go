package packet

import (
	"errors"
	"strings"
	"testing"
)

// pkt builds a packet from its first byte and body parts, computing the
// remaining length.
func pkt(first byte, parts ...[]byte) []byte {
	var body []byte
	for _, p := range parts {
		body = append(body, p...)
	}
	return append(appendVarint([]byte{first}, len(body)), body...)
}

// s is a length-prefixed string or binary field.
func s(v string) []byte { return appendString(nil, v) }

// b is raw bytes.
func b(v ...byte) []byte { return v }

var (
	connect311 = b(0, 4, 'M', 'Q', 'T', 'T', 4)
	connect5   = b(0, 4, 'M', 'Q', 'T', 'T', 5)
)

// ruleTests are one case per validity rule, named by the rule id (or the
// spec section when the statement has no id).
var ruleTests = []struct {
	name string
	v    Version
	wire []byte
	code ReasonCode
	rule string
}{
	// Fixed header.
	{"MQTT-2.1.3-1 PUBACK flags", V311, pkt(0x41, b(0, 1)), MalformedPacket, "MQTT-2.1.3-1"},
	{"MQTT-2.1.3-1 PUBREL DUP in 3.1.1", V311, pkt(0x6A, b(0, 1)), MalformedPacket, "MQTT-2.1.3-1"},
	{"MQTT-2.1.3-1 CONNECT flags in 3.1.1", V311, pkt(0x12, connect311, b(0x02, 0, 60), s("c")), MalformedPacket, "MQTT-2.1.3-1"},
	{"MQTT-2.1.3-1 PUBREL flags 0", V5, pkt(0x60, b(0, 1)), MalformedPacket, "MQTT-2.1.3-1"},
	{"MQTT-2.1.3-1 SUBSCRIBE flags 0", V311, pkt(0x80, b(0, 1), s("a"), b(0)), MalformedPacket, "MQTT-2.1.3-1"},
	{"MQTT-2.1.3-1 UNSUBSCRIBE flags 3", V311, pkt(0xA3, b(0, 1), s("a")), MalformedPacket, "MQTT-2.1.3-1"},
	{"MQTT-2.1.3-1 CONNECT flags", V311, pkt(0x11, connect311, b(2, 0, 0), s("c")), MalformedPacket, "MQTT-2.1.3-1"},
	{"MQTT-2.1.3-1 PINGREQ flags", V311, pkt(0xC8), MalformedPacket, "MQTT-2.1.3-1"},
	{"MQTT-2.1.2 AUTH in 3.1.1", V311, pkt(0xF0), MalformedPacket, "MQTT-2.1.2"},

	// PUBLISH.
	{"MQTT-3.3.1-4 QoS 3", V311, pkt(0x36, s("t"), b(0, 1)), MalformedPacket, "MQTT-3.3.1-4"},
	{"MQTT-3.3.1-2 DUP with QoS 0", V5, pkt(0x38, s("t"), b(0)), MalformedPacket, "MQTT-3.3.1-2"},
	{"MQTT-3.3.2-2 wildcard +", V311, pkt(0x30, s("a/+")), TopicNameInvalid, "MQTT-3.3.2-2"},
	{"MQTT-3.3.2-2 wildcard #", V5, pkt(0x30, s("#"), b(0)), TopicNameInvalid, "MQTT-3.3.2-2"},
	{"MQTT-4.7.3-1 empty topic 3.1.1", V311, pkt(0x30, s("")), TopicNameInvalid, "MQTT-4.7.3-1"},
	{"3.3.2.1 empty topic without alias 5.0", V5, pkt(0x30, s(""), b(0)), ProtocolError, ""},
	{"MQTT-2.2.1-3 PUBLISH QoS 1 id 0", V311, pkt(0x32, s("t"), b(0, 0)), ProtocolError, "MQTT-2.2.1-3"},
	{"MQTT-1.5.4-1 topic not UTF-8", V311, pkt(0x30, s("\xff")), MalformedPacket, "MQTT-1.5.4-1"},
	{"MQTT-1.5.4-1 topic with surrogate", V311, pkt(0x30, s("\xed\xa0\x80")), MalformedPacket, "MQTT-1.5.4-1"},
	{"MQTT-1.5.4-2 topic with U+0000", V311, pkt(0x30, s("a\x00")), MalformedPacket, "MQTT-1.5.4-1"},

	// CONNECT.
	{"MQTT-3.1.2-2 unknown level", V311, pkt(0x10, b(0, 4, 'M', 'Q', 'T', 'T', 6, 2, 0, 0), s("c")), UnsupportedProtocolVersion, "MQTT-3.1.2-2"},
	{"MQTT-3.1.2-2 MQIsdp with level 4", V311, pkt(0x10, b(0, 6, 'M', 'Q', 'I', 's', 'd', 'p', 4, 2, 0, 0), s("c")), UnsupportedProtocolVersion, "MQTT-3.1.2-2"},
	{"MQTT-3.1.2-2 bridge bit on level 5", V311, pkt(0x10, b(0, 4, 'M', 'Q', 'T', 'T', 0x85, 2, 0, 0), s("c")), UnsupportedProtocolVersion, "MQTT-3.1.2-2"},
	{"MQTT-3.1.2-2 bridge bit on MQIsdp level 4", V311, pkt(0x10, b(0, 6, 'M', 'Q', 'I', 's', 'd', 'p', 0x84, 2, 0, 0), s("c")), UnsupportedProtocolVersion, "MQTT-3.1.2-2"},
	{"MQTT-3.1.2-2 unknown name", V311, pkt(0x10, b(0, 4, 'M', 'Q', 'T', 'X', 4, 2, 0, 0), s("c")), UnsupportedProtocolVersion, "MQTT-3.1.2-2"},
	{"MQTT-3.1.2-3 reserved flag", V311, pkt(0x10, connect311, b(3, 0, 0), s("c")), MalformedPacket, "MQTT-3.1.2-3"},
	{"MQTT-3.1.2-12 will QoS 3", V311, pkt(0x10, connect311, b(0x1C, 0, 0), s("c"), s("w"), s("p")), MalformedPacket, "MQTT-3.1.2-12"},
	{"MQTT-3.1.2-11 will QoS without will flag", V5, pkt(0x10, connect5, b(0x08, 0, 0, 0), s("c")), MalformedPacket, "MQTT-3.1.2-11"},
	{"MQTT-3.1.2-13 will retain without will flag", V311, pkt(0x10, connect311, b(0x20, 0, 0), s("c")), MalformedPacket, "MQTT-3.1.2-13"},
	{"MQTT-3.1.2-22 password without user name 3.1.1", V311, pkt(0x10, connect311, b(0x40, 0, 0), s("c"), s("pw")), MalformedPacket, "MQTT-3.1.2-22"},
	{"MQTT-3.1.3-1 payload shorter than the flags say", V311, pkt(0x10, connect311, b(0x80, 0, 0), s("c")), MalformedPacket, ""},
	{"MQTT-1.5.4-1 client id not UTF-8", V311, pkt(0x10, connect311, b(0, 0, 0), s("\xc0")), MalformedPacket, "MQTT-1.5.4-1"},

	// CONNACK.
	{"MQTT-3.2.2-1 CONNACK reserved flags", V311, pkt(0x20, b(2, 0)), MalformedPacket, "MQTT-3.2.2-1"},

	// SUBSCRIBE and UNSUBSCRIBE.
	{"MQTT-3.8.3-3 SUBSCRIBE without filters 3.1.1", V311, pkt(0x82, b(0, 1)), MalformedPacket, "MQTT-3.8.3-3"},
	{"MQTT-3.8.3-3 SUBSCRIBE without filters 5.0", V5, pkt(0x82, b(0, 1, 0)), ProtocolError, "MQTT-3.8.3-3"},
	{"MQTT-3.8.3-5 reserved option bits 5.0", V5, pkt(0x82, b(0, 1, 0), s("a"), b(0x40)), MalformedPacket, "MQTT-3.8.3-5"},
	{"MQTT-3.8.3-4 upper QoS bits 3.1.1", V311, pkt(0x82, b(0, 1), s("a"), b(0x04)), MalformedPacket, "MQTT-3.8.3-4"},
	{"MQTT-3.8.3-4 QoS 3", V311, pkt(0x82, b(0, 1), s("a"), b(3)), MalformedPacket, "MQTT-3.8.3-4"},
	{"MQTT-3.8.3-4 QoS 3 in 5.0", V5, pkt(0x82, b(0, 1, 0), s("a"), b(3)), MalformedPacket, "MQTT-3.8.3-4"},
	{"3.8.3.1 retain handling 3", V5, pkt(0x82, b(0, 1, 0), s("a"), b(0x30)), MalformedPacket, ""},
	{"MQTT-2.2.1-3 SUBSCRIBE id 0", V311, pkt(0x82, b(0, 0), s("a"), b(0)), ProtocolError, "MQTT-2.2.1-3"},
	{"MQTT-3.10.3-2 UNSUBSCRIBE without filters 3.1.1", V311, pkt(0xA2, b(0, 1)), MalformedPacket, "MQTT-3.10.3-2"},
	{"MQTT-3.10.3-2 UNSUBSCRIBE without filters 5.0", V5, pkt(0xA2, b(0, 1, 0)), ProtocolError, "MQTT-3.10.3-2"},
	{"MQTT-2.2.1-3 UNSUBSCRIBE id 0", V5, pkt(0xA2, b(0, 0, 0), s("a")), ProtocolError, "MQTT-2.2.1-3"},
	{"MQTT-2.2.1-3 PUBACK id 0", V311, pkt(0x40, b(0, 0)), ProtocolError, "MQTT-2.2.1-3"},
	{"MQTT-2.2.1-3 PUBREL id 0", V5, pkt(0x62, b(0, 0)), ProtocolError, "MQTT-2.2.1-3"},
	{"MQTT-3.9.3-2 SUBACK 3.1.1 reserved return code", V311, pkt(0x90, b(0, 1, 0xA2)), MalformedPacket, "MQTT-3.9.3-2"},
	{"3.9.3 SUBACK without codes", V311, pkt(0x90, b(0, 1)), ProtocolError, ""},

	// Properties.
	{"2.2.2.2 property not allowed in packet", V5, pkt(0x30, s("t"), b(2, 0x11, 0)), MalformedPacket, ""},
	{"2.2.2.2 will delay outside will properties", V5, pkt(0x10, connect5, b(0, 0, 0, 5, 0x18, 0, 0, 0, 1), s("c")), MalformedPacket, ""},
	{"2.2.2.2 unknown property identifier", V5, pkt(0x30, s("t"), b(2, 0x04, 0)), MalformedPacket, ""},
	{"MQTT-2.2.2-1 duplicate property", V5, pkt(0x30, s("t"), b(4, 0x01, 0, 0x01, 0)), ProtocolError, "MQTT-2.2.2-1"},
	{"MQTT-2.2.2-1 two subscription ids in SUBSCRIBE", V5, pkt(0x82, b(0, 1, 4, 0x0B, 1, 0x0B, 2), s("a"), b(0)), ProtocolError, "MQTT-2.2.2-1"},
	{"2.2.2 property length beyond packet", V5, pkt(0x30, s("t"), b(9, 0x01, 0)), MalformedPacket, ""},
	{"2.2.2 property identifier beyond property length", V5, pkt(0x30, s("0"), b(1, 0x8B, 0x00)), MalformedPacket, ""},
	{"2.2.2 property value beyond property length", V5, pkt(0x30, s("t"), b(2, 0x02, 0, 0, 0, 1)), MalformedPacket, ""},
	{"3.3.2.3.8 subscription identifier 0", V5, pkt(0x30, s("t"), b(2, 0x0B, 0)), ProtocolError, ""},
	{"3.1.2.11.3 receive maximum 0", V5, pkt(0x10, connect5, b(0, 0, 0, 3, 0x21, 0, 0), s("c")), ProtocolError, ""},
	{"3.1.2.11.4 maximum packet size 0", V5, pkt(0x10, connect5, b(0, 0, 0, 5, 0x27, 0, 0, 0, 0), s("c")), ProtocolError, ""},
	{"3.3.2.3.2 payload format 2", V5, pkt(0x30, s("t"), b(2, 0x01, 2)), ProtocolError, ""},
	{"3.1.2.11.7 request problem information 2", V5, pkt(0x10, connect5, b(0, 0, 0, 2, 0x17, 2), s("c")), ProtocolError, ""},
	{"3.1.2.11.6 request response information 2", V5, pkt(0x10, connect5, b(0, 0, 0, 2, 0x19, 2), s("c")), ProtocolError, ""},
	{"3.2.2.3.4 maximum QoS 2", V5, pkt(0x20, b(0, 0, 2, 0x24, 2)), ProtocolError, ""},
	{"3.2.2.3.5 retain available 2", V5, pkt(0x20, b(0, 0, 2, 0x25, 2)), ProtocolError, ""},
	{"3.2.2.3.11 wildcard subscription available 2", V5, pkt(0x20, b(0, 0, 2, 0x28, 2)), ProtocolError, ""},
	{"3.2.2.3.12 subscription identifiers available 2", V5, pkt(0x20, b(0, 0, 2, 0x29, 2)), ProtocolError, ""},
	{"3.2.2.3.13 shared subscription available 2", V5, pkt(0x20, b(0, 0, 2, 0x2A, 2)), ProtocolError, ""},
	{"MQTT-3.3.2-8 topic alias 0", V5, pkt(0x30, s("t"), b(3, 0x23, 0, 0)), TopicAliasInvalid, "MQTT-3.3.2-8"},
	{"MQTT-1.5.4-1 user property not UTF-8", V5, pkt(0x30, s("t"), b(7, 0x26), s("\xff"), s("v")), MalformedPacket, "MQTT-1.5.4-1"},

	// Lengths.
	{"MQTT-1.5.5-1 varint in property longer than 4 bytes", V5, pkt(0x30, s("t"), b(6, 0x0B, 0x80, 0x80, 0x80, 0x80, 0x01)), MalformedPacket, "MQTT-1.5.5-1"},
	{"trailing bytes after PUBACK 3.1.1", V311, pkt(0x40, b(0, 1, 0)), MalformedPacket, ""},
	{"trailing bytes after CONNECT", V311, pkt(0x10, connect311, b(0, 0, 0), s("c"), b(0)), MalformedPacket, ""},
	{"trailing bytes after DISCONNECT 3.1.1", V311, pkt(0xE0, b(0)), MalformedPacket, ""},
	{"3.12 PINGREQ with body", V311, pkt(0xC0, b(0)), MalformedPacket, ""},
	{"3.13 PINGRESP with body", V5, pkt(0xD0, b(0)), MalformedPacket, ""},
	{"string longer than the packet", V311, pkt(0x30, b(0, 9, 'a')), MalformedPacket, ""},
}

func TestDecodeRules(t *testing.T) {
	for _, tt := range ruleTests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeWire(tt.wire, tt.v)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v, want *Error with code %v", err, tt.code)
			}
			if e.Code != tt.code || e.Rule != tt.rule {
				t.Errorf("got code %v rule %q (%v), want code %v rule %q", e.Code, e.Rule, e, tt.code, tt.rule)
			}
		})
	}
}

// Cases the rules allow, next to the ones they forbid.
func TestDecodeAllowed(t *testing.T) {
	tests := []struct {
		name string
		v    Version
		wire []byte
	}{
		{"password without user name in 5.0", V5, pkt(0x10, connect5, b(0x40, 0, 0, 0), s("c"), s("pw"))},
		// MQTT 3.1 has no reserved fixed-header flags (DUP on resent
		// PUBREL/SUBSCRIBE/UNSUBSCRIBE) and no reserved CONNECT flag check.
		{"3.1 PUBREL with DUP", V31, pkt(0x6A, b(0, 1))},
		{"3.1 SUBSCRIBE with DUP", V31, pkt(0x8A, b(0, 1), s("t"), b(1))},
		{"3.1 UNSUBSCRIBE with DUP", V31, pkt(0xAA, b(0, 1), s("t"))},
		{"3.1 PINGREQ with flags", V31, b(0xC1, 0)},
		{"3.1 PUBLISH QoS 0 with DUP", V31, pkt(0x38, s("t"), b('x'))},
		{"3.1 CONNECT reserved flag", V31, pkt(0x10, b(0, 6, 'M', 'Q', 'I', 's', 'd', 'p', 3, 0x03, 0, 60), s("c"))},
		{"3.1 CONNECT with fixed-header flags", V31, pkt(0x12, b(0, 6, 'M', 'Q', 'I', 's', 'd', 'p', 3, 0x02, 0, 60), s("c"))},
		{"repeated user properties", V5, pkt(0x30, s("t"), b(14, 0x26), s("k"), s("a"), b(0x26), s("k"), s("b"))},
		{"non-minimal varint remaining length", V311, b(0xC0, 0x80, 0x00)},
		{"non-minimal varint subscription id", V5, pkt(0x30, s("t"), b(3, 0x0B, 0x81, 0x00))},
		{"largest varint subscription id", V5, pkt(0x30, s("t"), b(5, 0x0B, 0xFF, 0xFF, 0xFF, 0x7F))},
		{"3.1.1 CONNACK with return code 5", V311, pkt(0x20, b(0, 5))},
		{"5.0 CONNACK without property length", V5, pkt(0x20, b(0, 0x87))},
		{"5.0 DISCONNECT reason code only", V5, pkt(0xE0, b(0x8E))},
		{"5.0 AUTH two-byte form", V5, pkt(0xF0)},
		{"U+FEFF and U+FFFF in topic", V311, pkt(0x30, s("\uFEFF\uFFFF"))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := decodeWire(tt.wire, tt.v); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A CONNECT that fails after its protocol level still comes back, so the
// server can answer in the client's version.
func TestDecodeConnectPartial(t *testing.T) {
	tests := []struct {
		name string
		wire []byte
		want Version
		code ReasonCode
	}{
		{"bad flags 3.1.1", pkt(0x10, connect311, b(1, 0, 0), s("c")), V311, MalformedPacket},
		{"bad property 5.0", pkt(0x10, connect5, b(0, 0, 0, 2, 0x01, 0), s("c")), V5, MalformedPacket},
		{"level 6", pkt(0x10, b(0, 4, 'M', 'Q', 'T', 'T', 6)), 6, UnsupportedProtocolVersion},
		{"truncated after level", pkt(0x10, connect5), V5, MalformedPacket},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := decodeWire(tt.wire, V311) // v is ignored for CONNECT
			var e *Error
			if !errors.As(err, &e) || e.Code != tt.code {
				t.Fatalf("error %v, want code %v", err, tt.code)
			}
			c, ok := p.(*Connect)
			if !ok || c.ProtocolVersion != tt.want {
				t.Fatalf("packet %#v, want *Connect with version %v", p, tt.want)
			}
		})
	}
	// Before the level is known there is nothing to return.
	p, err := decodeWire(pkt(0x10, b(0, 4, 'M', 'Q')), V311)
	if err == nil || p != nil {
		t.Errorf("got %v, %v; want nil packet and error", p, err)
	}
}

func TestParseFixedHeader(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want FixedHeader
		err  error
		code ReasonCode
	}{
		{"empty", nil, FixedHeader{}, ErrIncomplete, 0},
		{"first byte only", b(0x30), FixedHeader{}, ErrIncomplete, 0},
		{"varint continues", b(0x30, 0x80, 0x80), FixedHeader{}, ErrIncomplete, 0},
		{"one byte length", b(0x30, 0x05, 1, 2), FixedHeader{Type: PUBLISH, Remaining: 5, HeaderLen: 2}, nil, 0},
		{"flags", b(0x3B, 0x00), FixedHeader{Type: PUBLISH, Flags: 0xB, HeaderLen: 2}, nil, 0},
		{"four byte length", b(0x30, 0xFF, 0xFF, 0xFF, 0x7F), FixedHeader{Type: PUBLISH, Remaining: MaxVarint, HeaderLen: 5}, nil, 0},
		{"two byte length 128", b(0x30, 0x80, 0x01), FixedHeader{Type: PUBLISH, Remaining: 128, HeaderLen: 3}, nil, 0},
		{"MQTT-1.5.5-1 five byte length", b(0x30, 0x80, 0x80, 0x80, 0x80, 0x01), FixedHeader{}, nil, MalformedPacket},
		{"reserved type 0", b(0x00, 0x00), FixedHeader{}, nil, MalformedPacket},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := ParseFixedHeader(tt.in)
			if tt.code != 0 {
				var e *Error
				if !errors.As(err, &e) || e.Code != tt.code {
					t.Fatalf("error %v, want code %v", err, tt.code)
				}
				return
			}
			if err != tt.err || (err == nil && h != tt.want) {
				t.Errorf("got %+v, %v; want %+v, %v", h, err, tt.want, tt.err)
			}
		})
	}
}

func TestVarint(t *testing.T) {
	for _, n := range []int{0, 1, 127, 128, 16383, 16384, 2097151, 2097152, MaxVarint} {
		enc := appendVarint(nil, n)
		if len(enc) != varintLen(n) {
			t.Errorf("%d: %d bytes, varintLen says %d", n, len(enc), varintLen(n))
		}
		got, size, err := parseVarint(enc)
		if err != nil || got != n || size != len(enc) {
			t.Errorf("%d: parse gave %d, %d, %v", n, got, size, err)
		}
	}
}

func TestValidString(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"", true}, {"a/b", true}, {"日本", true}, {"\uFEFF", true},
		{"a\x00", false}, {"\xff", false}, {"\xed\xa0\x80", false}, {strings.Repeat("a", 65536), false},
	}
	for _, tt := range tests {
		if got := ValidString(tt.in); got != tt.want {
			t.Errorf("ValidString(%.20q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestErrorString(t *testing.T) {
	e := &Error{Code: MalformedPacket, Rule: "MQTT-3.3.1-4", Msg: "PUBLISH with QoS 3"}
	if got, want := e.Error(), "packet: malformed packet: PUBLISH with QoS 3 [MQTT-3.3.1-4]"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
