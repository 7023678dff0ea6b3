package conformance

import (
	"bytes"
	"testing"

	rc "github.com/roost-mqtt/roost/internal/rawclient"
)

// filter is a SUBSCRIBE entry: a topic filter and its options byte.
func filter(f string, opts byte) rc.Sub { return rc.Sub{Filter: f, Opts: opts} }

// TestMQTT_3_8_3_3_SubscribeWithoutFilters: a SUBSCRIBE MUST carry at
// least one topic filter ([MQTT-3.8.3-3] in 3.1.1, [MQTT-3.8.3-2] in 5.0);
// one without is a protocol error and closes the connection.
func TestMQTT_3_8_3_3_SubscribeWithoutFilters(t *testing.T) {
	t.Parallel()
	runBadPackets(t, []badPacketCase{{name: "empty", bytes: func(v byte) []byte {
		return rc.Frame(0x82, // SUBSCRIBE
			[]byte{0x00, 0x01}, // packet id 1
			noProps(v))         // properties; no payload at all
	}}}, 0x81, 0x82)
}

// TestMQTT_4_7_1_2_WildcardPlacement: '#' MUST be last and alone in its
// level [MQTT-4.7.1-2] and '+' MUST occupy a whole level [MQTT-4.7.1-3].
// A filter breaking this makes the SUBSCRIBE malformed: the server closes
// the connection, after DISCONNECT 0x81 in 5.0 (section 4.13), rather than
// refusing the filter with a SUBACK code, which is for well-formed filters
// it does not accept (see also TestMQTT_4_7_3_1_MalformedFilterInSubscribe).
// Valid wildcard filters are granted.
func TestMQTT_4_7_1_2_WildcardPlacement(t *testing.T) {
	t.Parallel()
	forVersions(t, func(t *testing.T, v byte) {
		addr := startBroker(t, brokerConfig{})
		for _, filter := range []string{"a/#/b", "a#", "#/", "a/b#", "a+", "a/+b", "+a/b"} {
			t.Run(filter, func(t *testing.T) {
				t.Parallel()
				c := cleanConnect(t, addr, v, "bad-filter-"+filter)
				c.sendBad(rc.Subscribe(v, 1, nil, rc.Sub{Filter: filter, Opts: 1}))
				c.expectMalformedClose()
			})
		}
		t.Run("valid", func(t *testing.T) {
			t.Parallel()
			c := cleanConnect(t, addr, v, "good-filter")
			subs := []rc.Sub{filter("#", 0), filter("+", 0), filter("a/+/b/#", 0),
				filter("+/+", 0), filter("/#", 0), filter("a//b", 0)}
			if codes := c.subscribe(2, nil, subs...); !bytes.Equal(codes, make([]byte, len(subs))) {
				t.Fatalf("SUBACK codes % x, want all 0x00", codes)
			}
		})
	})
}

// TestMQTT_3_8_4_5_SubackOneCodePerFilterInOrder: a SUBSCRIBE with several
// filters gets one SUBACK [MQTT-3.8.4-4] with the same packet identifier
// [MQTT-3.8.4-2] and one return code per filter [MQTT-3.8.4-5], in order
// [MQTT-3.9.3-1], each the QoS granted.
func TestMQTT_3_8_4_5_SubackOneCodePerFilterInOrder(t *testing.T) {
	t.Parallel()
	forVersions(t, func(t *testing.T, v byte) {
		addr := startBroker(t, brokerConfig{})
		c := cleanConnect(t, addr, v, "multi")
		c.send(rc.Frame(0x82, // SUBSCRIBE
			[]byte{0x12, 0x34},            // packet id 0x1234
			noProps(v),                    // properties
			rc.Str("q/two"), []byte{0x02}, // QoS 2
			rc.Str("q/zero"), []byte{0x00}, // QoS 0
			rc.Str("q/one"), []byte{0x01}, // QoS 1
			rc.Str("q/+"), []byte{0x02}, // QoS 2, overlapping
		))
		p := c.expect(rc.SUBACK)
		want := rc.Frame(0x90, // SUBACK
			[]byte{0x12, 0x34},             // packet id echoed
			noProps(v),                     // properties
			[]byte{0x02, 0x00, 0x01, 0x02}) // granted QoS, in request order
		if got := rc.Frame(p.Type<<4|p.Flags, p.Body); !bytes.Equal(got, want) {
			t.Fatalf("SUBACK % x, want % x", got, want)
		}
		c.ping() // nothing else was sent, e.g. a second SUBACK
	})
}

// TestMQTT_3_8_4_6_DeliveredQoSIsMinimum: a message is delivered at the
// lower of its published QoS and the QoS granted to the subscription
// ([MQTT-3.8.4-6] in 3.1.1; section 3.8.4 in 5.0).
func TestMQTT_3_8_4_6_DeliveredQoSIsMinimum(t *testing.T) {
	t.Parallel()
	forVersions(t, func(t *testing.T, v byte) {
		addr := startBroker(t, brokerConfig{})
		sub := cleanConnect(t, addr, v, "sub")
		codes := sub.subscribe(1, nil, filter("m/0", 0), filter("m/1", 1), filter("m/2", 2))
		if !bytes.Equal(codes, []byte{0, 1, 2}) {
			t.Fatalf("SUBACK codes % x, want 00 01 02", codes)
		}
		pub := cleanConnect(t, addr, v, "pub")
		cases := []struct {
			topic       string
			pubQoS, got byte
		}{
			{"m/0", 2, 0}, {"m/1", 2, 1}, {"m/2", 1, 1}, {"m/2", 0, 0}, {"m/2", 2, 2}, {"m/1", 0, 0},
		}
		for i, tc := range cases {
			pub.publish(tc.topic, "x", tc.pubQoS, false, uint16(i+1))
			m := sub.receive()
			if m.Topic != tc.topic || m.QoS != tc.got {
				t.Fatalf("published %q at QoS %d: received %q at QoS %d, want QoS %d",
					tc.topic, tc.pubQoS, m.Topic, m.QoS, tc.got)
			}
		}
	})
}

// TestMQTT_3_8_4_3_ResubscribeReplaces: subscribing again to an identical
// filter MUST replace the existing subscription: the new QoS applies and
// each message is delivered once.
func TestMQTT_3_8_4_3_ResubscribeReplaces(t *testing.T) {
	t.Parallel()
	forVersions(t, func(t *testing.T, v byte) {
		addr := startBroker(t, brokerConfig{})
		sub := cleanConnect(t, addr, v, "sub")
		sub.sub("r/x", 0)
		sub.sub("r/x", 1)
		pub := cleanConnect(t, addr, v, "pub")
		pub.publish("r/x", "once", 1, false, 1)
		if m := sub.receiveTopic("r/x", "once"); m.QoS != 1 {
			t.Fatalf("delivered at QoS %d, want 1 (the replacing subscription's)", m.QoS)
		}
		sub.quiet(quietPeriod)
	})
}
