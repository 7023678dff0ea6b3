package packet

import (
	"reflect"
	"testing"
)

var versions = []Version{V31, V311, V5}

// samples returns one full packet of every type for version v; 5.0-only
// fields are set only for V5 so the round trip is exact.
func samples(v Version) []Packet {
	five := v == V5
	name := "MQTT"
	if v == V31 {
		name = "MQIsdp"
	}
	var (
		connProps, willProps, ackProps, pubProps, subProps Properties
		connackProps, discProps                            Properties
	)
	if five {
		connProps = props(func(p *Properties) {
			for _, id := range []PropID{PropSessionExpiry, PropAuthMethod, PropAuthData, PropRequestProblemInfo,
				PropRequestResponseInfo, PropReceiveMaximum, PropTopicAliasMaximum, PropMaximumPacketSize, PropUserProperty} {
				p.Set(id)
			}
			p.SessionExpiry, p.AuthMethod, p.AuthData = 3600, "PLAIN", []byte{1, 2}
			p.RequestProblemInfo, p.RequestResponseInfo = 1, 1
			p.ReceiveMaximum, p.TopicAliasMaximum, p.MaximumPacketSize = 100, 10, 1<<20
			p.User = []UserProperty{{"a", "1"}, {"a", "2"}}
		})
		willProps = props(func(p *Properties) {
			for _, id := range []PropID{PropPayloadFormat, PropMessageExpiry, PropContentType, PropResponseTopic,
				PropCorrelationData, PropWillDelay, PropUserProperty} {
				p.Set(id)
			}
			p.PayloadFormat, p.MessageExpiry, p.ContentType, p.ResponseTopic = 1, 60, "text/plain", "r/t"
			p.CorrelationData, p.WillDelay, p.User = []byte("cd"), 30, []UserProperty{{"w", "x"}}
		})
		connackProps = props(func(p *Properties) {
			for _, id := range []PropID{PropSessionExpiry, PropAssignedClientID, PropServerKeepAlive, PropResponseInfo,
				PropServerReference, PropReasonString, PropMaximumQoS, PropRetainAvailable, PropWildcardSubAvailable,
				PropSubIDAvailable, PropSharedSubAvailable, PropTopicAliasMaximum} {
				p.Set(id)
			}
			p.SessionExpiry, p.AssignedClientID, p.ServerKeepAlive = 10, "auto-1", 30
			p.ResponseInfo, p.ServerReference, p.ReasonString = "ri", "other:1883", "ok"
			p.RetainAvailable, p.TopicAliasMaximum = 1, 5
		})
		pubProps = props(func(p *Properties) {
			for _, id := range []PropID{PropTopicAlias, PropSubscriptionID, PropMessageExpiry, PropUserProperty} {
				p.Set(id)
			}
			p.TopicAlias, p.SubscriptionIDs, p.MessageExpiry = 3, []uint32{1, MaxVarint}, 9
			p.User = []UserProperty{{"", ""}}
		})
		ackProps = props(func(p *Properties) { p.Set(PropReasonString); p.ReasonString = "why" })
		subProps = props(func(p *Properties) { p.Set(PropSubscriptionID); p.SubscriptionIDs = []uint32{7} })
		discProps = props(func(p *Properties) { p.Set(PropServerReference); p.ServerReference = "elsewhere" })
	}
	rc := func(c ReasonCode) ReasonCode {
		if five {
			return c
		}
		return 0
	}
	subOpts := SubOptions{QoS: 2}
	if five {
		subOpts = SubOptions{QoS: 1, NoLocal: true, RetainAsPublished: true, RetainHandling: 1}
	}
	connackRC := ConnackCode311(NotAuthorized)
	if five {
		connackRC = NotAuthorized
	}
	var unsubackCodes []ReasonCode
	if five {
		unsubackCodes = []ReasonCode{Success, NoSubscriptionExisted}
	}
	ps := []Packet{
		&Connect{ProtocolName: name, ProtocolVersion: v, CleanStart: true, KeepAlive: 30, ClientID: "client-1",
			Properties: connProps, WillFlag: true, WillQoS: 2, WillRetain: true, WillTopic: "will/t",
			WillPayload: []byte("gone"), WillProperties: willProps,
			UsernameFlag: true, Username: "user", PasswordFlag: true, Password: []byte("secret")},
		&Connect{ProtocolName: name, ProtocolVersion: v},
		&Connack{SessionPresent: true, ReasonCode: connackRC, Properties: connackProps},
		&Publish{Dup: true, QoS: 2, Retain: true, Topic: "a/b/c", PacketID: 65535, Properties: pubProps, Payload: []byte("payload")},
		&Publish{Topic: "x"},
		&Puback{PacketID: 1, ReasonCode: rc(QuotaExceeded), Properties: ackProps},
		&Pubrec{PacketID: 2, ReasonCode: rc(NoMatchingSubscribers), Properties: ackProps},
		&Pubrel{PacketID: 3, ReasonCode: rc(PacketIdentifierNotFound), Properties: ackProps},
		&Pubcomp{PacketID: 4, Properties: ackProps},
		&Subscribe{PacketID: 5, Properties: subProps, Subscriptions: []Subscription{
			{Filter: "a/+/b", Options: subOpts}, {Filter: "#"}, {Filter: "$share/g/x"}}},
		&Suback{PacketID: 5, Properties: ackProps, ReasonCodes: []ReasonCode{GrantedQoS2, Success, UnspecifiedError}},
		&Unsubscribe{PacketID: 6, Filters: []string{"a/+/b", "日本"}},
		&Unsuback{PacketID: 6, Properties: ackProps, ReasonCodes: unsubackCodes},
		&Pingreq{},
		&Pingresp{},
		&Disconnect{ReasonCode: rc(ServerMoved), Properties: discProps},
	}
	if five {
		ps = append(ps,
			&Auth{},
			&Auth{ReasonCode: ReAuthenticate, Properties: props(func(p *Properties) {
				p.Set(PropAuthMethod)
				p.Set(PropAuthData)
				p.Set(PropReasonString)
				p.AuthMethod, p.AuthData, p.ReasonString = "SCRAM", []byte{0}, "again"
			})},
			&Disconnect{ReasonCode: SessionTakenOver},
			&Puback{PacketID: 9, ReasonCode: NoMatchingSubscribers},
		)
	}
	return ps
}

func TestRoundTrip(t *testing.T) {
	for _, v := range versions {
		for _, p := range samples(v) {
			t.Run(v.String()+"/"+p.Type().String(), func(t *testing.T) {
				b, err := p.Encode(nil, v)
				if err != nil {
					t.Fatal(err)
				}
				got, err := decodeWire(b, v)
				if err != nil {
					t.Fatalf("decode % x: %v", b, err)
				}
				if !reflect.DeepEqual(got, p) {
					t.Errorf("round trip changed the packet\n got %+v\nwant %+v", got, p)
				}
			})
		}
	}
}

// Encode appends to dst and leaves what was there alone.
func TestEncodeAppends(t *testing.T) {
	for _, p := range samples(V5) {
		prefix := []byte("prefix")
		b, err := p.Encode(prefix, V5)
		if err != nil {
			t.Fatal(err)
		}
		if string(b[:6]) != "prefix" {
			t.Errorf("%v: Encode overwrote dst", p.Type())
		}
	}
}

// Decode copies out of body: scribbling over it afterwards changes nothing.
func TestDecodeCopies(t *testing.T) {
	for _, p := range samples(V5) {
		b, _ := p.Encode(nil, V5)
		got, err := decodeWire(b, V5)
		if err != nil {
			t.Fatal(err)
		}
		for i := range b {
			b[i] = '!'
		}
		if !reflect.DeepEqual(got, p) {
			t.Errorf("%v: decoded packet aliases the input buffer", p.Type())
		}
	}
}

func TestEncodeErrors(t *testing.T) {
	long := string(make([]byte, 70000))
	tests := []struct {
		name string
		p    Packet
		v    Version
	}{
		{"AUTH in 3.1.1", &Auth{}, V311},
		{"unknown version", &Pingreq{}, Version(6)},
		{"topic over 65535 bytes", &Publish{Topic: long}, V311},
		{"user property over 65535 bytes", &Publish{Topic: "t", Properties: Properties{User: []UserProperty{{long, ""}}}}, V5},
		{"remaining length over MaxVarint", hugeSubscribe(), V311},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := tt.p.Encode(nil, tt.v); err == nil {
				t.Error("Encode succeeded")
			}
		})
	}
}

// hugeSubscribe is a SUBSCRIBE above MaxVarint bytes whose filters all
// share one string, so the test does not allocate 256 MiB.
func hugeSubscribe() *Subscribe {
	f := string(make([]byte, 60000))
	p := &Subscribe{PacketID: 1, Subscriptions: make([]Subscription, 4500)}
	for i := range p.Subscriptions {
		p.Subscriptions[i].Filter = f
	}
	return p
}

func TestSubackEncode311MapsFailures(t *testing.T) {
	p := &Suback{PacketID: 1, ReasonCodes: []ReasonCode{GrantedQoS1, NotAuthorized, TopicFilterInvalid}}
	b, _ := p.Encode(nil, V311)
	if got := b[len(b)-3:]; got[0] != 1 || got[1] != 0x80 || got[2] != 0x80 {
		t.Errorf("codes % x, want 01 80 80", got)
	}
}

func TestConnackCode311(t *testing.T) {
	tests := []struct{ in, want ReasonCode }{
		{Success, 0}, {UnsupportedProtocolVersion, 1}, {ClientIdentifierNotValid, 2},
		{ServerUnavailable, 3}, {ServerBusy, 3}, {Banned, 3}, {UnspecifiedError, 3},
		{BadUserNameOrPassword, 4}, {NotAuthorized, 5}, {Connack311NotAuthorized, 5},
	}
	for _, tt := range tests {
		if got := ConnackCode311(tt.in); got != tt.want {
			t.Errorf("ConnackCode311(%v) = %d, want %d", tt.in, got, tt.want)
		}
	}
}
