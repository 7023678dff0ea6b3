package packet

import (
	"bytes"
	"reflect"
	"testing"
)

// golden fixtures: each one is the exact wire form of a packet, written
// byte group by byte group with the spec section it comes from. They drive
// both directions: Encode(packet) must produce wire, Decode(wire) must give
// packet back.
var goldens = []struct {
	name   string
	v      Version
	packet Packet
	wire   []byte
}{
	{
		name: "CONNECT 5.0 with properties, will and credentials",
		v:    V5,
		packet: &Connect{
			ProtocolName: "MQTT", ProtocolVersion: V5, CleanStart: true, KeepAlive: 60, ClientID: "c1",
			Properties: props(func(p *Properties) {
				p.Set(PropSessionExpiry)
				p.SessionExpiry = 120
				p.Set(PropReceiveMaximum)
				p.ReceiveMaximum = 20
				p.Set(PropUserProperty)
				p.User = []UserProperty{{"k", "v"}}
			}),
			WillFlag: true, WillQoS: 1, WillTopic: "w", WillPayload: []byte("bye"),
			WillProperties: props(func(p *Properties) { p.Set(PropWillDelay); p.WillDelay = 5 }),
			UsernameFlag:   true, Username: "u", PasswordFlag: true, Password: []byte("p"),
		},
		wire: []byte{
			0x10, 0x32, // CONNECT, remaining length 50 [3.1.1]
			0x00, 0x04, 'M', 'Q', 'T', 'T', // protocol name [3.1.2.1]
			0x05,       // protocol level 5 [3.1.2.2]
			0xCE,       // flags: user name, password, will QoS 1, will, clean start [3.1.2.3]
			0x00, 0x3C, // keep alive 60 [3.1.2.10]
			0x0F,                         // property length 15 [3.1.2.11.1]
			0x11, 0x00, 0x00, 0x00, 0x78, // session expiry interval 120 [3.1.2.11.2]
			0x21, 0x00, 0x14, // receive maximum 20 [3.1.2.11.3]
			0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'v', // user property k=v [3.1.2.11.8]
			0x00, 0x02, 'c', '1', // client identifier [3.1.3.1]
			0x05,                         // will property length 5 [3.1.3.2]
			0x18, 0x00, 0x00, 0x00, 0x05, // will delay interval 5 [3.1.3.2.2]
			0x00, 0x01, 'w', // will topic [3.1.3.3]
			0x00, 0x03, 'b', 'y', 'e', // will payload [3.1.3.4]
			0x00, 0x01, 'u', // user name [3.1.3.5]
			0x00, 0x01, 'p', // password [3.1.3.6]
		},
	},
	{
		name:   "CONNECT 3.1.1 minimal",
		v:      V311,
		packet: &Connect{ProtocolName: "MQTT", ProtocolVersion: V311, CleanStart: true, KeepAlive: 60},
		wire: []byte{
			0x10, 0x0C, // CONNECT, remaining length 12 [MQTT-2.1.1]
			0x00, 0x04, 'M', 'Q', 'T', 'T', // protocol name [3.1.2.1]
			0x04,       // protocol level 4 [3.1.2.2]
			0x02,       // clean session [3.1.2.4]
			0x00, 0x3C, // keep alive 60 [3.1.2.10]
			0x00, 0x00, // empty client identifier [MQTT-3.1.3-6]
		},
	},
	{
		name:   "CONNECT 3.1.1 bridge (mosquitto try_private)",
		v:      V311,
		packet: &Connect{ProtocolName: "MQTT", ProtocolVersion: V311, Bridge: true, KeepAlive: 60, ClientID: "b"},
		wire: []byte{
			0x10, 0x0D, // CONNECT, remaining length 13
			0x00, 0x04, 'M', 'Q', 'T', 'T', // protocol name [3.1.2.1]
			0x84,       // protocol level 4 with the bridge bit 0x80 (mosquitto, not OASIS)
			0x00,       // no flags: a persistent session, as mosquitto bridges use
			0x00, 0x3C, // keep alive 60
			0x00, 0x01, 'b', // client identifier
		},
	},
	{
		name:   "CONNECT 3.1 bridge",
		v:      V31,
		packet: &Connect{ProtocolName: "MQIsdp", ProtocolVersion: V31, Bridge: true, CleanStart: true, KeepAlive: 10, ClientID: "c1"},
		wire: []byte{
			0x10, 0x10, // CONNECT, remaining length 16
			0x00, 0x06, 'M', 'Q', 'I', 's', 'd', 'p', // protocol name of 3.1
			0x83,       // protocol level 3 with the bridge bit
			0x02,       // clean session
			0x00, 0x0A, // keep alive 10
			0x00, 0x02, 'c', '1', // client identifier
		},
	},
	{
		name:   "CONNECT 3.1 MQIsdp",
		v:      V31,
		packet: &Connect{ProtocolName: "MQIsdp", ProtocolVersion: V31, CleanStart: true, KeepAlive: 10, ClientID: "c1"},
		wire: []byte{
			0x10, 0x10, // CONNECT, remaining length 16
			0x00, 0x06, 'M', 'Q', 'I', 's', 'd', 'p', // protocol name of 3.1
			0x03,       // protocol level 3
			0x02,       // clean session
			0x00, 0x0A, // keep alive 10
			0x00, 0x02, 'c', '1', // client identifier
		},
	},
	{
		name:   "CONNACK 3.1.1 session present",
		v:      V311,
		packet: &Connack{SessionPresent: true, ReasonCode: Connack311Accepted},
		wire: []byte{
			0x20, 0x02, // CONNACK, remaining length 2 [3.2.1]
			0x01, // session present [3.2.2.2]
			0x00, // return code accepted [3.2.2.3]
		},
	},
	{
		name: "CONNACK 5.0 with properties",
		v:    V5,
		packet: &Connack{ReasonCode: Success, Properties: props(func(p *Properties) {
			p.Set(PropAssignedClientID)
			p.AssignedClientID = "id"
			p.Set(PropMaximumQoS)
			p.MaximumQoS = 1
		})},
		wire: []byte{
			0x20, 0x0A, // CONNACK, remaining length 10 [3.2.1]
			0x00,                       // acknowledge flags [3.2.2.1]
			0x00,                       // reason code Success [3.2.2.2]
			0x07,                       // property length [3.2.2.3.1]
			0x12, 0x00, 0x02, 'i', 'd', // assigned client identifier [3.2.2.3.7]
			0x24, 0x01, // maximum QoS 1 [3.2.2.3.4]
		},
	},
	{
		name:   "PUBLISH 3.1.1 QoS 1 DUP RETAIN",
		v:      V311,
		packet: &Publish{Dup: true, QoS: 1, Retain: true, Topic: "a/b", PacketID: 10, Payload: []byte("hello")},
		wire: []byte{
			0x3B, 0x0C, // PUBLISH, DUP|QoS 1|RETAIN, remaining length 12 [3.3.1]
			0x00, 0x03, 'a', '/', 'b', // topic name [3.3.2.1]
			0x00, 0x0A, // packet identifier 10 [3.3.2.2]
			'h', 'e', 'l', 'l', 'o', // payload [3.3.3]
		},
	},
	{
		name: "PUBLISH 5.0 QoS 0 empty topic with topic alias",
		v:    V5,
		packet: &Publish{Payload: []byte("x"), Properties: props(func(p *Properties) {
			p.Set(PropTopicAlias)
			p.TopicAlias = 5
		})},
		wire: []byte{
			0x30, 0x07, // PUBLISH QoS 0, remaining length 7 [3.3.1]
			0x00, 0x00, // empty topic name, alias in use [3.3.2.1]
			0x03,             // property length [3.3.2.3.1]
			0x23, 0x00, 0x05, // topic alias 5 [3.3.2.3.4]
			'x', // payload [3.3.3]
		},
	},
	{
		name: "PUBLISH 5.0 QoS 2 with subscription identifiers",
		v:    V5,
		packet: &Publish{QoS: 2, Topic: "t", PacketID: 0x0102, Properties: props(func(p *Properties) {
			p.Set(PropPayloadFormat)
			p.PayloadFormat = 1
			p.Set(PropSubscriptionID)
			p.SubscriptionIDs = []uint32{1, 128}
			p.Set(PropCorrelationData)
			p.CorrelationData = []byte{0xFF}
		})},
		wire: []byte{
			0x34, 0x11, // PUBLISH QoS 2, remaining length 17 [3.3.1]
			0x00, 0x01, 't', // topic name [3.3.2.1]
			0x01, 0x02, // packet identifier 258 [3.3.2.2]
			0x0B,       // property length 11 [3.3.2.3.1]
			0x01, 0x01, // payload format indicator UTF-8 [3.3.2.3.2]
			0x09, 0x00, 0x01, 0xFF, // correlation data [3.3.2.3.6]
			0x0B, 0x01, // subscription identifier 1 [3.3.2.3.8]
			0x0B, 0x80, 0x01, // subscription identifier 128, two-byte varint [1.5.5]
		},
	},
	{
		name:   "PUBACK 5.0 short form",
		v:      V5,
		packet: &Puback{PacketID: 1},
		wire: []byte{
			0x40, 0x02, // PUBACK, remaining length 2 [3.4.1]
			0x00, 0x01, // packet identifier; Success and no properties omitted [3.4.2.1]
		},
	},
	{
		name:   "PUBACK 5.0 reason code without properties",
		v:      V5,
		packet: &Puback{PacketID: 1, ReasonCode: NoMatchingSubscribers},
		wire: []byte{
			0x40, 0x03, // PUBACK, remaining length 3 [3.4.1]
			0x00, 0x01, // packet identifier [3.4.2]
			0x10, // reason code No matching subscribers; property length omitted [3.4.2.2.1]
		},
	},
	{
		name: "PUBREC 5.0 with reason string",
		v:    V5,
		packet: &Pubrec{PacketID: 2, ReasonCode: UnspecifiedError, Properties: props(func(p *Properties) {
			p.Set(PropReasonString)
			p.ReasonString = "bad"
		})},
		wire: []byte{
			0x50, 0x0A, // PUBREC, remaining length 10 [3.5.1]
			0x00, 0x02, // packet identifier [3.5.2]
			0x80,                            // reason code Unspecified error [3.5.2.1]
			0x06,                            // property length [3.5.2.2.1]
			0x1F, 0x00, 0x03, 'b', 'a', 'd', // reason string [3.5.2.2.2]
		},
	},
	{
		name:   "PUBREL 3.1.1",
		v:      V311,
		packet: &Pubrel{PacketID: 5},
		wire: []byte{
			0x62, 0x02, // PUBREL, flags 0b0010 [MQTT-3.6.1-1], remaining length 2
			0x00, 0x05, // packet identifier [3.6.2]
		},
	},
	{
		name:   "PUBCOMP 3.1",
		v:      V31,
		packet: &Pubcomp{PacketID: 5},
		wire:   []byte{0x70, 0x02, 0x00, 0x05}, // PUBCOMP, remaining length 2, packet identifier [3.7]
	},
	{
		name:   "SUBSCRIBE 3.1.1",
		v:      V311,
		packet: &Subscribe{PacketID: 1, Subscriptions: []Subscription{{Filter: "a/#", Options: SubOptions{QoS: 1}}}},
		wire: []byte{
			0x82, 0x08, // SUBSCRIBE, flags 0b0010 [MQTT-3.8.1-1], remaining length 8
			0x00, 0x01, // packet identifier [3.8.2]
			0x00, 0x03, 'a', '/', '#', // topic filter [3.8.3]
			0x01, // requested QoS 1 [3.8.3]
		},
	},
	{
		name: "SUBSCRIBE 5.0 with subscription identifier and options",
		v:    V5,
		packet: &Subscribe{PacketID: 2,
			Properties: props(func(p *Properties) { p.Set(PropSubscriptionID); p.SubscriptionIDs = []uint32{5} }),
			Subscriptions: []Subscription{{Filter: "t", Options: SubOptions{
				QoS: 1, NoLocal: true, RetainAsPublished: true, RetainHandling: 2}}}},
		wire: []byte{
			0x82, 0x09, // SUBSCRIBE, flags 0b0010, remaining length 9 [3.8.1]
			0x00, 0x02, // packet identifier [3.8.2]
			0x02,       // property length [3.8.2.1.1]
			0x0B, 0x05, // subscription identifier 5 [3.8.2.1.2]
			0x00, 0x01, 't', // topic filter [3.8.3]
			0x2D, // options: retain handling 2, RAP, NL, QoS 1 [3.8.3.1]
		},
	},
	{
		name:   "SUBACK 3.1.1 with failure",
		v:      V311,
		packet: &Suback{PacketID: 1, ReasonCodes: []ReasonCode{GrantedQoS1, UnspecifiedError}},
		wire: []byte{
			0x90, 0x04, // SUBACK, remaining length 4 [3.9.1]
			0x00, 0x01, // packet identifier [3.9.2]
			0x01, 0x80, // granted QoS 1, failure [3.9.3]
		},
	},
	{
		name:   "SUBACK 5.0",
		v:      V5,
		packet: &Suback{PacketID: 1, ReasonCodes: []ReasonCode{GrantedQoS2, WildcardSubscriptionsNotSupported}},
		wire: []byte{
			0x90, 0x05, // SUBACK, remaining length 5 [3.9.1]
			0x00, 0x01, // packet identifier [3.9.2]
			0x00,       // property length [3.9.2.1.1]
			0x02, 0xA2, // granted QoS 2, wildcard subscriptions not supported [3.9.3]
		},
	},
	{
		name:   "UNSUBSCRIBE 3.1.1",
		v:      V311,
		packet: &Unsubscribe{PacketID: 3, Filters: []string{"a", "b/+"}},
		wire: []byte{
			0xA2, 0x0A, // UNSUBSCRIBE, flags 0b0010 [MQTT-3.10.1-1], remaining length 10
			0x00, 0x03, // packet identifier [3.10.2]
			0x00, 0x01, 'a', // topic filter [3.10.3]
			0x00, 0x03, 'b', '/', '+', // topic filter [3.10.3]
		},
	},
	{
		name:   "UNSUBACK 3.1.1",
		v:      V311,
		packet: &Unsuback{PacketID: 3},
		wire:   []byte{0xB0, 0x02, 0x00, 0x03}, // UNSUBACK, remaining length 2, packet identifier [3.11]
	},
	{
		name:   "UNSUBACK 5.0",
		v:      V5,
		packet: &Unsuback{PacketID: 3, ReasonCodes: []ReasonCode{NoSubscriptionExisted}},
		wire: []byte{
			0xB0, 0x04, // UNSUBACK, remaining length 4 [3.11.1]
			0x00, 0x03, // packet identifier [3.11.2]
			0x00, // property length [3.11.2.1.1]
			0x11, // no subscription existed [3.11.3]
		},
	},
	{name: "PINGREQ", v: V311, packet: &Pingreq{}, wire: []byte{0xC0, 0x00}},                               // [3.12]
	{name: "PINGRESP", v: V5, packet: &Pingresp{}, wire: []byte{0xD0, 0x00}},                               // [3.13]
	{name: "DISCONNECT 3.1.1", v: V311, packet: &Disconnect{}, wire: []byte{0xE0, 0x00}},                   // [3.14]
	{name: "DISCONNECT 5.0 normal, two-byte form", v: V5, packet: &Disconnect{}, wire: []byte{0xE0, 0x00}}, // [3.14.2.1]
	{
		name: "DISCONNECT 5.0 with will and session expiry",
		v:    V5,
		packet: &Disconnect{ReasonCode: DisconnectWithWill, Properties: props(func(p *Properties) {
			p.Set(PropSessionExpiry)
		})},
		wire: []byte{
			0xE0, 0x07, // DISCONNECT, remaining length 7 [3.14.1]
			0x04,                         // disconnect with will message [3.14.2.1]
			0x05,                         // property length [3.14.2.2.1]
			0x11, 0x00, 0x00, 0x00, 0x00, // session expiry interval 0 [3.14.2.2.2]
		},
	},
	{
		name: "AUTH 5.0 continue",
		v:    V5,
		packet: &Auth{ReasonCode: ContinueAuthentication, Properties: props(func(p *Properties) {
			p.Set(PropAuthMethod)
			p.AuthMethod = "SCRA"
		})},
		wire: []byte{
			0xF0, 0x09, // AUTH, remaining length 9 [3.15.1]
			0x18,                                 // continue authentication [3.15.2.1]
			0x07,                                 // property length [3.15.2.2.1]
			0x15, 0x00, 0x04, 'S', 'C', 'R', 'A', // authentication method [3.15.2.2.2]
		},
	},
}

func props(f func(*Properties)) Properties {
	var p Properties
	f(&p)
	return p
}

// decodeWire runs ParseFixedHeader and Decode over a complete packet.
func decodeWire(b []byte, v Version) (Packet, error) {
	h, err := ParseFixedHeader(b)
	if err != nil {
		return nil, err
	}
	if len(b) != h.HeaderLen+h.Remaining {
		return nil, &Error{Code: MalformedPacket, Msg: "test: length mismatch"}
	}
	return Decode(h, b[h.HeaderLen:], v)
}

func TestGoldenEncode(t *testing.T) {
	for _, g := range goldens {
		t.Run(g.name, func(t *testing.T) {
			got, err := g.packet.Encode(nil, g.v)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, g.wire) {
				t.Errorf("Encode:\n got % x\nwant % x", got, g.wire)
			}
		})
	}
}

func TestGoldenDecode(t *testing.T) {
	for _, g := range goldens {
		t.Run(g.name, func(t *testing.T) {
			got, err := decodeWire(g.wire, g.v)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, g.packet) {
				t.Errorf("Decode:\n got %+v\nwant %+v", got, g.packet)
			}
		})
	}
}
