package rawclient

import (
	"bytes"
	"testing"
)

// Golden encodings, written out by hand from the specification, so that a
// mistake in the builders shows here rather than as a broker "bug".
func TestBuilders(t *testing.T) {
	user, pass := "u", "p"
	tests := []struct {
		name string
		got  []byte
		want []byte
	}{
		{"varint 0", VarInt(0), []byte{0x00}},
		{"varint 127", VarInt(127), []byte{0x7F}},
		{"varint 128", VarInt(128), []byte{0x80, 0x01}},
		{"varint 16383", VarInt(16383), []byte{0xFF, 0x7F}},
		{"varint 268435455", VarInt(268435455), []byte{0xFF, 0xFF, 0xFF, 0x7F}},
		{"CONNECT 3.1.1", Connect{Version: 4, ClientID: "c", Clean: true, KeepAlive: 60}.Bytes(), []byte{
			0x10, 0x0D, // CONNECT, remaining length 13
			0x00, 0x04, 'M', 'Q', 'T', 'T', // protocol name
			0x04,       // level
			0x02,       // flags: clean session
			0x00, 0x3C, // keep alive 60
			0x00, 0x01, 'c', // client id
		}},
		{"CONNECT 5.0 with will, user, password", Connect{
			Version: 5, ClientID: "c", KeepAlive: 10,
			Props:    PropU32(PropSessionExpiry, 300),
			Will:     &Will{Topic: "w", Payload: "x", QoS: 1, Retain: true, Props: PropU32(PropWillDelay, 2)},
			Username: &user, Password: &pass,
		}.Bytes(), []byte{
			0x10, 0x25, // CONNECT, remaining length 37
			0x00, 0x04, 'M', 'Q', 'T', 'T', // protocol name
			0x05,       // level
			0xEC,       // flags: user, password, will retain, will QoS 1, will
			0x00, 0x0A, // keep alive 10
			0x05, 0x11, 0x00, 0x00, 0x01, 0x2C, // properties: session expiry 300
			0x00, 0x01, 'c', // client id
			0x05, 0x18, 0x00, 0x00, 0x00, 0x02, // will properties: will delay 2
			0x00, 0x01, 'w', // will topic
			0x00, 0x01, 'x', // will payload
			0x00, 0x01, 'u', // user name
			0x00, 0x01, 'p', // password
		}},
		{"PUBLISH 5.0 QoS 1 dup retain", Publish{Version: 5, QoS: 1, Dup: true, Retain: true, Topic: "a/b", ID: 7,
			Props: PropU16(PropTopicAlias, 1), Payload: []byte("hi")}.Bytes(), []byte{
			0x3B, 0x0D, // PUBLISH dup, QoS 1, retain; remaining length 13
			0x00, 0x03, 'a', '/', 'b', // topic
			0x00, 0x07, // packet id
			0x03, 0x23, 0x00, 0x01, // properties: topic alias 1
			'h', 'i', // payload
		}},
		{"SUBSCRIBE 3.1.1", Subscribe(4, 1, nil, Sub{"a", 1}, Sub{"b/#", 2}), []byte{
			0x82, 0x0C, // SUBSCRIBE, remaining length 12
			0x00, 0x01, // packet id
			0x00, 0x01, 'a', 0x01, // filter, QoS 1
			0x00, 0x03, 'b', '/', '#', 0x02, // filter, QoS 2
		}},
		{"PUBREL", Ack(PUBREL, 0x0102), []byte{0x62, 0x02, 0x01, 0x02}},
	}
	for _, tc := range tests {
		if !bytes.Equal(tc.got, tc.want) {
			t.Errorf("%s:\n got % x\nwant % x", tc.name, tc.got, tc.want)
		}
	}
}

func TestParsePublishV5(t *testing.T) {
	body := []byte{
		0x00, 0x01, 't', // topic
		0x00, 0x09, // packet id
		0x07,       // property length 7
		0x0B, 0x2C, // subscription id 44
		0x02, 0x00, 0x00, 0x00, 0x05, // message expiry 5
		0x0B, // payload: must not be read as a property
	}
	m, err := ParsePublish(5, 0x0B, body)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Dup || m.QoS != 1 || !m.Retain || m.Topic != "t" || m.ID != 9 {
		t.Fatalf("header fields wrong: %+v", m)
	}
	if id, _ := m.Props.Get(PropSubscriptionID); id.Int != 44 {
		t.Fatalf("subscription id %d, want 44", id.Int)
	}
	if e, _ := m.Props.Get(PropMessageExpiry); e.Int != 5 {
		t.Fatalf("message expiry %d, want 5", e.Int)
	}
	if !bytes.Equal(m.Payload, []byte{0x0B}) {
		t.Fatalf("payload % x, want 0b", m.Payload)
	}
}
