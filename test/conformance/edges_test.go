package conformance

import (
	"fmt"
	"strings"
	"testing"

	rc "github.com/roost-mqtt/roost/internal/rawclient"
)

// connect31 is an MQTT 3.1 CONNECT ("MQIsdp", protocol level 3) with the
// given connect flags and keep alive 60 [MQTT 3.1 section 3.1].
func connect31(flags byte, clientID string) []byte {
	return rc.Frame(0x10,
		rc.Str("MQIsdp"), // protocol name
		[]byte{0x03},     // protocol version 3
		[]byte{flags},    // connect flags
		rc.U16(60),       // keep alive
		rc.Str(clientID)) // payload: client id
}

// connected31 connects an MQTT 3.1 client with clean session and requires
// CONNACK 0. The client reads and writes with the 3.1.1 framing helpers:
// the two versions frame every packet used here alike.
func connected31(t *testing.T, addr string, flags byte, id string) *client {
	t.Helper()
	c := dial(t, addr, 4, id)
	c.send(connect31(flags, id))
	c.expectBytes([]byte{0x20, 0x02, 0x00, 0x00})
	return c
}

// TestMQTT31_Sec2_1_DupOnPubrelSubscribeUnsubscribe: MQTT 3.1 is not
// 3.1.1. In 3.1 the fixed header of PUBREL, SUBSCRIBE and UNSUBSCRIBE
// carries DUP (set when the client resends one after reconnecting) and QoS
// 1 (section 2.1 and 3.6/3.8/3.10 of the 3.1 specification), and no rule
// makes a server reject other flag values, which 3.1.1 does
// ([MQTT-2.2.2-2] there), nor DUP on a QoS 0 PUBLISH ([MQTT-3.3.1-2] in
// 3.1.1). A 3.1 server must therefore take 0x6A, 0x8A, 0xAA and 0x38; the
// 3.1.1 rule is tested by TestMQTT_2_1_3_1_ReservedFlagBits.
func TestMQTT31_Sec2_1_DupOnPubrelSubscribeUnsubscribe(t *testing.T) {
	t.Parallel()
	forTransports(t, func(t *testing.T) {
		addr := startBroker(t, brokerConfig{})
		c := connected31(t, addr, 0x02, "v31-dup")

		c.send(rc.Frame(0x8A, // SUBSCRIBE, DUP | QoS 1
			rc.U16(1), rc.Str("v31/t"), []byte{0x01}))
		c.expectBytes([]byte{0x90, 0x03, 0x00, 0x01, 0x01}) // SUBACK id 1, QoS 1

		// A QoS 2 message to a topic nobody subscribed to: the exchange is
		// all there is to see.
		c.send(rc.Publish{Version: 4, QoS: 2, Topic: "v31/other", ID: 7, Payload: []byte("x")}.Bytes())
		c.expectBytes([]byte{0x50, 0x02, 0x00, 0x07}) // PUBREC 7
		// The client resends PUBREL, as after a reconnect: DUP set.
		c.send([]byte{0x6A, 0x02, 0x00, 0x07})        // PUBREL 7, DUP | QoS 1
		c.expectBytes([]byte{0x70, 0x02, 0x00, 0x07}) // PUBCOMP 7

		// DUP on a QoS 0 PUBLISH: meaningless in 3.1, but not an error as in
		// 3.1.1 ([MQTT-3.3.1-2] there).
		c.send(rc.Frame(0x38, rc.Str("v31/other"), []byte("x")))

		c.send(rc.Frame(0xAA, // UNSUBSCRIBE, DUP | QoS 1
			rc.U16(2), rc.Str("v31/t")))
		c.expectBytes([]byte{0xB0, 0x02, 0x00, 0x02}) // UNSUBACK 2
		c.ping()
	})
}

// TestMQTT31_Sec3_1_ConnectReservedFlagNotChecked: the connect flags' bit 0
// is "reserved, not used" in MQTT 3.1; only 3.1.1 requires a server to
// close a connection that sets it ([MQTT-3.1.2-3], tested by
// TestMQTT_3_1_2_3_ReservedConnectFlag). A 3.1 client that sets it is
// accepted.
func TestMQTT31_Sec3_1_ConnectReservedFlagNotChecked(t *testing.T) {
	t.Parallel()
	forTransports(t, func(t *testing.T) {
		addr := startBroker(t, brokerConfig{})
		c := connected31(t, addr, 0x03 /* clean | reserved */, "v31-reserved")
		c.ping()
	})
}

// TestMQTT5_3_1_2_24_MaximumPacketSizeBindsConnack: the client's Maximum
// Packet Size binds every packet the server sends, CONNACK included
// [MQTT-3.1.2-24]. A client announcing 2 bytes cannot take any CONNACK: the
// server closes the connection without sending one. A client announcing
// enough gets one within its size.
func TestMQTT5_3_1_2_24_MaximumPacketSizeBindsConnack(t *testing.T) {
	t.Parallel()
	forTransports(t, func(t *testing.T) {
		addr := startBroker(t, brokerConfig{})
		tiny := dial(t, addr, 5, "tiny")
		tiny.sendBad(rc.Connect{Version: 5, ClientID: "tiny", Clean: true, KeepAlive: 60,
			Props: rc.PropU32(rc.PropMaximumPacketSize, 2)}.Bytes())
		if seen := tiny.closedAfter(); len(seen) != 0 {
			t.Fatalf("client with Maximum Packet Size 2 got %v, want a close without any packet", seen)
		}

		const fits = 64
		c := dial(t, addr, 5, "fits")
		c.send(rc.Connect{Version: 5, ClientID: "fits", Clean: true, KeepAlive: 60,
			Props: rc.PropU32(rc.PropMaximumPacketSize, fits)}.Bytes())
		p := c.expect(rc.CONNACK)
		if n := len(rc.Frame(p.Type<<4|p.Flags, p.Body)); n > fits {
			t.Fatalf("CONNACK of %d bytes for a Maximum Packet Size of %d", n, fits)
		}
		c.ping()
	})
}

// malformedFilters break [MQTT-4.7.3-1] (a filter is at least one
// character), [MQTT-4.7.1-2] ('#' alone in the last level) or
// [MQTT-4.7.1-3] ('+' a whole level).
var malformedFilters = []string{"", "a/#/b", "a#", "#/", "a/b#", "a+", "a/+b", "+a/b", "$share/g/a#"}

// TestMQTT_4_7_3_1_MalformedFilterInSubscribe: a malformed topic filter is
// a protocol violation, not a filter the server may refuse: an MQTT 5
// server sends DISCONNECT 0x81 Malformed Packet and closes (section 4.13),
// a 3.1.1 server closes (section 4.8). It does not answer SUBACK (0x80 /
// 0x8F Topic Filter invalid is for filters that are well formed but not
// accepted), and no filter of the packet takes effect.
func TestMQTT_4_7_3_1_MalformedFilterInSubscribe(t *testing.T) {
	t.Parallel()
	forVersions(t, func(t *testing.T, v byte) {
		addr := startBroker(t, brokerConfig{})
		for i, f := range malformedFilters {
			t.Run(f, func(t *testing.T) {
				t.Parallel()
				c := cleanConnect(t, addr, v, fmt.Sprintf("bad-sub-%d", i))
				// A good filter first: it must not be granted either.
				c.sendBad(rc.Subscribe(v, 1, nil, rc.Sub{Filter: "good/+", Opts: 0}, rc.Sub{Filter: f, Opts: 0}))
				c.expectMalformedClose()
			})
		}
	})
}

// TestMQTT_4_7_1_2_MalformedFilterInUnsubscribe: the same holds for
// UNSUBSCRIBE, whose filters follow the same rules: DISCONNECT 0x81 (5.0)
// or a close (3.1.1), not UNSUBACK 0x11 No subscription existed.
func TestMQTT_4_7_1_2_MalformedFilterInUnsubscribe(t *testing.T) {
	t.Parallel()
	forVersions(t, func(t *testing.T, v byte) {
		addr := startBroker(t, brokerConfig{})
		for i, f := range malformedFilters {
			t.Run(f, func(t *testing.T) {
				t.Parallel()
				c := cleanConnect(t, addr, v, fmt.Sprintf("bad-unsub-%d", i))
				c.sendBad(rc.Frame(0xA2, rc.U16(1), noProps(v), rc.Str(f)))
				c.expectMalformedClose()
			})
		}
	})
}

// expectMalformedClose requires the close for a malformed packet: a silent
// one in 3.1.1, DISCONNECT 0x81 first in 5.0.
func (c *client) expectMalformedClose() {
	c.t.Helper()
	if code, sent := c.expectClosed(0x81); c.v == 5 && !sent {
		c.t.Fatalf("%s: closed without DISCONNECT 0x81", c.name)
	} else if sent {
		c.t.Logf("DISCONNECT 0x%02x", code)
	}
}

// TestMQTT5_Sec4_13_TooManyTopicLevelsSaysWhy: when an MQTT 5 server closes
// a connection over a PUBLISH it will not take, it says why with a
// DISCONNECT reason code first (section 4.13: "the Server MUST" use a
// DISCONNECT with a reason code "before closing" where it can), also for a
// topic with more levels than the server handles: 0x90 Topic Name invalid
// (or 0x81/0x82/0x97). The topic is near the longest a string can be, so
// a reason string quoting it whole could not be encoded.
func TestMQTT5_Sec4_13_TooManyTopicLevelsSaysWhy(t *testing.T) {
	t.Parallel()
	forTransports(t, func(t *testing.T) {
		addr := startBroker(t, brokerConfig{})
		c := cleanConnect(t, addr, 5, "deep")
		deep := strings.Repeat("l/", 32766) + "e" // 32767 levels, 65533 bytes: over Roost's 128 and mosquitto's 200
		c.sendBad(rc.Publish{Version: 5, QoS: 1, ID: 1, Topic: deep, Payload: []byte("x")}.Bytes())
		if _, sent := c.expectClosed(0x90, 0x81, 0x82, 0x97); !sent {
			t.Fatal("closed without a DISCONNECT saying why")
		}
	})
}

// TestMQTT_4_7_3_1_EmptyWillTopic: a will topic is a topic name, so it is at
// least one character long [MQTT-4.7.3-1]. A 3.1.1 CONNECT with a
// zero-length will topic is malformed and the server closes the connection
// without CONNACK: no 3.1.1 return code fits, and 3 (server unavailable)
// would send the client retrying for ever. A 5.0 server may first answer
// CONNACK 0x81, 0x82 or 0x90 Topic Name invalid.
func TestMQTT_4_7_3_1_EmptyWillTopic(t *testing.T) {
	t.Parallel()
	forVersions(t, func(t *testing.T, v byte) {
		addr := startBroker(t, brokerConfig{})
		c := dial(t, addr, v, "empty-will")
		c.sendBad(rc.Connect{Version: v, ClientID: "empty-will", Clean: true, KeepAlive: 60,
			Will: &rc.Will{Topic: "", Payload: "gone"}}.Bytes())
		seen := c.closedAfter()
		if v == 4 && len(seen) > 0 {
			t.Fatalf("got %v, want a silent close", seen)
		}
		requireRefusalConnack(t, seen, 0x81, 0x82, 0x90)
	})
}

// TestMQTT5_3_14_2_3_ReasonStringWithinMaximumPacketSize: a DISCONNECT
// carries a Reason String only if the client's Maximum Packet Size leaves
// room for it [MQTT-3.14.2-3]; without room the DISCONNECT still goes,
// without the string, so the client learns the reason code.
func TestMQTT5_3_14_2_3_ReasonStringWithinMaximumPacketSize(t *testing.T) {
	t.Parallel()
	forTransports(t, func(t *testing.T) {
		const limit = 20 // room for a CONNACK, not for an explanation
		addr := startBroker(t, brokerConfig{})
		c := dial(t, addr, 5, "terse")
		c.send(rc.Connect{Version: 5, ClientID: "terse", Clean: true, KeepAlive: 60,
			Props: rc.PropU32(rc.PropMaximumPacketSize, limit)}.Bytes())
		if ack := c.connack(); ack.Code != 0 {
			t.Fatalf("CONNACK 0x%02x", ack.Code)
		}
		c.sendBad(rc.Publish{Version: 5, Topic: "no/+/wildcards/in/names", Payload: []byte("x")}.Bytes())
		seen := c.closedAfter()
		if len(seen) == 0 {
			t.Fatal("closed without DISCONNECT")
		}
		if n := len(rc.Frame(seen[0].Type<<4|seen[0].Flags, seen[0].Body)); n > limit {
			t.Fatalf("%v is %d bytes, over the client's Maximum Packet Size %d", seen[0], n, limit)
		}
		c.checkDisconnect(seen, 0x90, 0x81, 0x82)
	})
}
