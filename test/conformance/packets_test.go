package conformance

import (
	"testing"

	rc "github.com/roost-mqtt/roost/internal/rawclient"
)

// noProps is the empty 5.0 property block, or nothing in 3.1.1.
func noProps(v byte) []byte {
	if v == 5 {
		return []byte{0x00} // property length 0
	}
	return nil
}

// badPacketCase is a packet that must make the server close the
// connection; setup, if set, runs first on the connected client.
type badPacketCase struct {
	name  string
	setup func(c *client)
	bytes func(v byte) []byte
	// mosquitto, when set, describes how mosquitto deviates; the case is
	// skipped against it.
	mosquitto string
}

// runBadPackets connects one client per case and version, sends the bad
// bytes and requires the connection closed, optionally after a 5.0
// DISCONNECT with a code in allowed.
func runBadPackets(t *testing.T, cases []badPacketCase, allowed ...byte) {
	t.Helper()
	forVersions(t, func(t *testing.T, v byte) {
		addr := startBroker(t, brokerConfig{})
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				if tc.mosquitto != "" {
					skipIfMosquittoDeviates(t, tc.mosquitto)
				}
				c := cleanConnect(t, addr, v, t.Name())
				if tc.setup != nil {
					tc.setup(c)
				}
				c.sendBad(tc.bytes(v))
				if code, ok := c.expectClosed(allowed...); ok {
					t.Logf("DISCONNECT 0x%02x", code)
				}
			})
		}
	})
}

// TestMQTT_2_1_3_1_ReservedFlagBits: fixed-header flag bits marked
// reserved MUST have the listed values ([MQTT-2.1.3-1] in 5.0; [MQTT-2.2.2-1]
// and [MQTT-2.2.2-2] in 3.1.1, and per packet [MQTT-3.6.1-1],
// [MQTT-3.8.1-1], [MQTT-3.10.1-1]); otherwise the packet is malformed and
// the server closes the connection.
func TestMQTT_2_1_3_1_ReservedFlagBits(t *testing.T) {
	t.Parallel()
	runBadPackets(t, []badPacketCase{
		{name: "SUBSCRIBE_flags_0000", bytes: func(v byte) []byte {
			return rc.Frame(0x80, // SUBSCRIBE with flags 0000 instead of 0010
				[]byte{0x00, 0x01},     // packet id 1
				noProps(v),             // properties
				rc.Str("a"), []byte{0}) // filter "a", QoS 0
		}},
		{name: "UNSUBSCRIBE_flags_0000", bytes: func(v byte) []byte {
			return rc.Frame(0xA0, // UNSUBSCRIBE with flags 0000 instead of 0010
				[]byte{0x00, 0x01}, // packet id 1
				noProps(v),         // properties
				rc.Str("a"))        // filter "a"
		}},
		{name: "PUBREL_flags_0000",
			// A real QoS 2 exchange is in progress, so only the flags
			// are wrong.
			setup: func(c *client) {
				c.send(rc.Publish{Version: c.v, QoS: 2, Topic: "x", ID: 1}.Bytes())
				c.expectAck(rc.PUBREC, 1)
			},
			bytes: func(byte) []byte {
				return []byte{
					0x60, 0x02, // PUBREL with flags 0000 instead of 0010
					0x00, 0x01, // packet id 1
				}
			}},
		{name: "PINGREQ_flags_0001", mosquitto: "ignores the flags of PINGREQ (answers PINGRESP)", bytes: func(byte) []byte {
			return []byte{0xC1, 0x00} // PINGREQ with flags 0001
		}},
		{name: "PUBACK_flags_0001", mosquitto: "ignores the flags of PUBACK", bytes: func(byte) []byte {
			return []byte{
				0x41, 0x02, // PUBACK with flags 0001
				0x00, 0x01, // packet id 1
			}
		}},
	}, 0x81, 0x82)
}

// TestMQTT_3_3_1_4_PublishQoS3: a PUBLISH MUST NOT have both QoS bits set;
// the server closes the connection.
func TestMQTT_3_3_1_4_PublishQoS3(t *testing.T) {
	t.Parallel()
	runBadPackets(t, []badPacketCase{{name: "QoS3", bytes: func(v byte) []byte {
		return rc.Frame(0x36, // PUBLISH, flags 0110: QoS 3
			rc.Str("a"),        // topic "a"
			[]byte{0x00, 0x01}, // packet id 1
			noProps(v),         // properties
			[]byte("x"))        // payload
	}}}, 0x81, 0x82)
}

// TestMQTT_3_3_2_2_WildcardInTopicName: the topic name of a PUBLISH MUST
// NOT contain wildcards; the server closes the connection (5.0: DISCONNECT
// 0x90 Topic Name invalid, or 0x81/0x82, may come first).
func TestMQTT_3_3_2_2_WildcardInTopicName(t *testing.T) {
	t.Parallel()
	var cases []badPacketCase
	for _, topic := range []string{"a/+", "a/#", "#", "+", "a/b+"} {
		cases = append(cases, badPacketCase{name: topic, bytes: func(v byte) []byte {
			return rc.Frame(0x30, // PUBLISH QoS 0
				rc.Str(topic), // topic name with a wildcard
				noProps(v),    // properties
				[]byte("x"))   // payload
		}})
	}
	runBadPackets(t, cases, 0x90, 0x81, 0x82)
}

// TestMQTT_2_2_1_3_NonZeroPacketIdentifier: SUBSCRIBE, UNSUBSCRIBE and
// QoS 1/2 PUBLISH MUST carry a non-zero packet identifier ([MQTT-2.2.1-3]
// in 5.0, [MQTT-2.3.1-1] in 3.1.1); packet id 0 closes the connection.
func TestMQTT_2_2_1_3_NonZeroPacketIdentifier(t *testing.T) {
	t.Parallel()
	runBadPackets(t, []badPacketCase{
		{name: "PUBLISH_QoS1", bytes: func(v byte) []byte {
			return rc.Frame(0x32, // PUBLISH QoS 1
				rc.Str("a"),        // topic "a"
				[]byte{0x00, 0x00}, // packet id 0
				noProps(v),         // properties
				[]byte("x"))        // payload
		}},
		{name: "PUBLISH_QoS2", bytes: func(v byte) []byte {
			return rc.Frame(0x34, // PUBLISH QoS 2
				rc.Str("a"),        // topic "a"
				[]byte{0x00, 0x00}, // packet id 0
				noProps(v),         // properties
				[]byte("x"))        // payload
		}},
		{name: "SUBSCRIBE", bytes: func(v byte) []byte {
			return rc.Frame(0x82, // SUBSCRIBE
				[]byte{0x00, 0x00},     // packet id 0
				noProps(v),             // properties
				rc.Str("a"), []byte{0}) // filter "a", QoS 0
		}},
		{name: "UNSUBSCRIBE", bytes: func(v byte) []byte {
			return rc.Frame(0xA2, // UNSUBSCRIBE
				[]byte{0x00, 0x00}, // packet id 0
				noProps(v),         // properties
				rc.Str("a"))        // filter "a"
		}},
	}, 0x81, 0x82)
}

// TestMQTT_1_5_4_2_NullCharacterInTopic: a UTF-8 string MUST NOT contain
// U+0000 ([MQTT-1.5.4-2] in 5.0, where it makes the packet malformed;
// [MQTT-1.5.3-2] in 3.1.1, where closing is a MAY that this suite requires).
func TestMQTT_1_5_4_2_NullCharacterInTopic(t *testing.T) {
	t.Parallel()
	runBadPackets(t, []badPacketCase{{name: "PUBLISH", bytes: func(v byte) []byte {
		return rc.Frame(0x30, // PUBLISH QoS 0
			[]byte{0x00, 0x03, 'a', 0x00, 'b'}, // topic "a\x00b"
			noProps(v),                         // properties
			[]byte("x"))                        // payload
	}}}, 0x81, 0x82, 0x90)
}

// TestMQTT_1_5_4_1_IllFormedUTF8: ill-formed UTF-8, including surrogates
// and overlong forms, in a topic name or filter closes the connection
// ([MQTT-1.5.4-1] in 5.0, [MQTT-1.5.3-1] in 3.1.1).
func TestMQTT_1_5_4_1_IllFormedUTF8(t *testing.T) {
	t.Parallel()
	bad := map[string]string{
		"invalid_byte": "a\xFFb",
		"surrogate":    "a\xED\xA0\x80", // U+D800
		"overlong":     "a\xC0\xAF",     // '/' in two bytes
		"truncated":    "a\xE2\x82",     // first two bytes of U+20AC
	}
	var cases []badPacketCase
	for name, s := range bad {
		cases = append(cases,
			badPacketCase{name: "PUBLISH_" + name, bytes: func(v byte) []byte {
				return rc.Frame(0x30, // PUBLISH QoS 0
					rc.Str(s),   // topic name
					noProps(v),  // properties
					[]byte("x")) // payload
			}},
			badPacketCase{name: "SUBSCRIBE_" + name, bytes: func(v byte) []byte {
				return rc.Frame(0x82, // SUBSCRIBE
					[]byte{0x00, 0x01},   // packet id 1
					noProps(v),           // properties
					rc.Str(s), []byte{0}) // filter, QoS 0
			}})
	}
	runBadPackets(t, cases, 0x81, 0x82, 0x90, 0x8F)
}

// TestMQTT_4_7_3_1_EmptyTopicName: topic names MUST be at least one
// character long; a PUBLISH with an empty topic (and, in 5.0, no Topic
// Alias) closes the connection.
func TestMQTT_4_7_3_1_EmptyTopicName(t *testing.T) {
	t.Parallel()
	runBadPackets(t, []badPacketCase{{name: "PUBLISH", bytes: func(v byte) []byte {
		return rc.Frame(0x30, // PUBLISH QoS 0
			[]byte{0x00, 0x00}, // topic: zero bytes
			noProps(v),         // properties
			[]byte("x"))        // payload
	}}}, 0x81, 0x82, 0x90)
}

// TestMQTT_Sec1_5_5_MalformedRemainingLength: a Variable Byte Integer of
// more than four bytes is malformed and closes the connection.
func TestMQTT_Sec1_5_5_MalformedRemainingLength(t *testing.T) {
	t.Parallel()
	runBadPackets(t, []badPacketCase{{name: "five_bytes", bytes: func(byte) []byte {
		return []byte{
			0x30,                         // PUBLISH QoS 0
			0xFF, 0xFF, 0xFF, 0xFF, 0x7F, // remaining length: five bytes
		}
	}}}, 0x81, 0x95)
}

// TestMQTT_3_12_4_1_PingResp: the server MUST answer PINGREQ with PINGRESP.
func TestMQTT_3_12_4_1_PingResp(t *testing.T) {
	t.Parallel()
	forVersions(t, func(t *testing.T, v byte) {
		addr := startBroker(t, brokerConfig{})
		c := cleanConnect(t, addr, v, "pinger")
		c.send([]byte{0xC0, 0x00})             // PINGREQ
		c.expectBytes([]byte{0xD0, 0x00})      // PINGRESP
		c.send([]byte{0xC0, 0x00, 0xC0, 0x00}) // two PINGREQs in one segment
		c.expectBytes([]byte{0xD0, 0x00})
		c.expectBytes([]byte{0xD0, 0x00})
	})
}
