package conformance

import (
	"fmt"
	"strings"
	"testing"
	"time"

	rc "github.com/roost-mqtt/roost/internal/rawclient"
)

// MQTT 5.0-only features.

// aliasPublish is a QoS 0 PUBLISH with a Topic Alias property.
func aliasPublish(topic string, alias uint16, payload string) []byte {
	return rc.Frame(0x30, // PUBLISH QoS 0
		rc.Str(topic), // topic name, possibly empty
		[]byte{0x03},  // property length 3
		[]byte{0x23},  // Topic Alias
		rc.U16(alias), // its value
		[]byte(payload))
}

// TestMQTT5_Sec3_3_2_3_4_TopicAlias: a topic alias set by a PUBLISH with a
// topic name stands for that name in later PUBLISHes with an empty one; a
// subscriber that sent no Topic Alias Maximum receives the full topic and
// no alias [MQTT-3.1.2-27]. An alias of 0 or above the server's Topic Alias
// Maximum is DISCONNECT 0x94 (0x81 or 0x82 also accepted for 0); an alias never set is a protocol error; and
// aliases do not survive the connection [MQTT-3.3.2-7].
func TestMQTT5_Sec3_3_2_3_4_TopicAlias(t *testing.T) {
	t.Parallel()
	forTransports(t, func(t *testing.T) {
		addr := startBroker(t, brokerConfig{TopicAliasMaximum: 10})

		t.Run("use", func(t *testing.T) {
			t.Parallel()
			sub := cleanConnect(t, addr, 5, "sub")
			sub.sub("ta/#", 0)
			pub, ack := connect(t, addr, rc.Connect{Version: 5, ClientID: "pub", Clean: true, KeepAlive: 60})
			if p, ok := ack.Props.Get(rc.PropTopicAliasMaximum); !ok || p.Int != 10 {
				t.Fatalf("CONNACK Topic Alias Maximum %v (present %v), want 10", p.Int, ok)
			}
			pub.send(aliasPublish("ta/x", 1, "one"))
			pub.send(aliasPublish("", 1, "two"))
			pub.send(aliasPublish("ta/y", 1, "three")) // remaps alias 1
			pub.send(aliasPublish("", 1, "four"))
			for _, want := range []struct{ topic, payload string }{
				{"ta/x", "one"}, {"ta/x", "two"}, {"ta/y", "three"}, {"ta/y", "four"},
			} {
				m := sub.receiveTopic(want.topic, want.payload)
				if _, ok := m.Props.Get(rc.PropTopicAlias); ok {
					t.Fatalf("server sent a Topic Alias to a client whose maximum is 0: %v", m.Props)
				}
			}
		})
		t.Run("above_maximum", func(t *testing.T) {
			t.Parallel()
			c := cleanConnect(t, addr, 5, "above")
			c.sendBad(aliasPublish("bad/x", 11, "x"))
			c.expectDisconnect(0x94)
		})
		t.Run("zero", func(t *testing.T) {
			// The spec forbids sending alias 0 [MQTT-3.3.2-8] but names no
			// reason code for receiving it: 0x94, 0x82 and 0x81 all fit.
			t.Parallel()
			c := cleanConnect(t, addr, 5, "zero")
			c.sendBad(aliasPublish("bad/x", 0, "x"))
			c.expectClosed(0x94, 0x82, 0x81)
		})
		t.Run("unknown", func(t *testing.T) {
			t.Parallel()
			c := cleanConnect(t, addr, 5, "unknown")
			c.sendBad(aliasPublish("", 3, "x"))
			c.expectClosed(0x82, 0x94)
		})
		t.Run("not_carried_over", func(t *testing.T) {
			t.Parallel()
			c := cleanConnect(t, addr, 5, "carry")
			c.send(aliasPublish("other/z", 2, "x"))
			c.disconnect()
			c = cleanConnect(t, addr, 5, "carry")
			c.sendBad(aliasPublish("", 2, "x"))
			c.expectClosed(0x82, 0x94)
		})
	})
}

// TestMQTT5_Sec3_3_4_ReceiveMaximumExceeded: a client may not have more
// unacknowledged QoS 1/2 PUBLISHes outstanding than the server's Receive
// Maximum; the server disconnects one that does with DISCONNECT 0x93
// Receive Maximum exceeded (section 3.3.4).
func TestMQTT5_Sec3_3_4_ReceiveMaximumExceeded(t *testing.T) {
	t.Parallel()
	forTransports(t, func(t *testing.T) {
		skipIfMosquittoDeviates(t, "answers the excess PUBLISH with PUBREC 0x97 Quota exceeded and stays connected")
		addr := startBroker(t, brokerConfig{ReceiveMaximum: 2})
		c, ack := connect(t, addr, rc.Connect{Version: 5, ClientID: "greedy", Clean: true, KeepAlive: 60})
		p, ok := ack.Props.Get(rc.PropReceiveMaximum)
		if !ok || p.Int != 2 {
			t.Fatalf("CONNACK Receive Maximum %d (present %v), want 2", p.Int, ok)
		}
		// QoS 2 messages stay unacknowledged until PUBCOMP, which needs our
		// PUBREL: never sending it keeps them all in flight.
		for id := uint16(1); id <= 2; id++ {
			c.send(rc.Publish{Version: 5, QoS: 2, Topic: "rm/t", ID: id}.Bytes())
			c.expectAck(rc.PUBREC, id)
		}
		c.sendBad(rc.Publish{Version: 5, QoS: 2, Topic: "rm/t", ID: 3}.Bytes())
		c.expectDisconnect(0x93)
	})
}

// TestMQTT5_Sec3_2_2_3_6_ServerMaximumPacketSize: the server announces its
// Maximum Packet Size in CONNACK and disconnects a client that sends a
// larger packet with 0x95 Packet too large (a 3.1.1 client is just
// disconnected).
func TestMQTT5_Sec3_2_2_3_6_ServerMaximumPacketSize(t *testing.T) {
	t.Parallel()
	forVersions(t, func(t *testing.T, v byte) {
		addr := startBroker(t, brokerConfig{MaxPacketSize: 128})
		c, ack := connect(t, addr, rc.Connect{Version: v, ClientID: "big", Clean: true, KeepAlive: 60})
		if v == 5 {
			if p, ok := ack.Props.Get(rc.PropMaximumPacketSize); !ok || p.Int != 128 {
				t.Fatalf("CONNACK Maximum Packet Size %d (present %v), want 128", p.Int, ok)
			}
		}
		c.publish("mps/ok", strings.Repeat("s", 64), 1, false, 1) // fits
		c.sendBad(rc.Publish{Version: v, QoS: 1, Topic: "mps/big", ID: 2,
			Payload: []byte(strings.Repeat("b", 200))}.Bytes())
		if v == 5 {
			c.expectDisconnect(0x95)
		} else {
			c.expectClosed()
		}
	})
}

// TestMQTT5_3_1_2_24_ClientMaximumPacketSize: the server MUST NOT send a
// client a packet larger than the client's Maximum Packet Size
// [MQTT-3.1.2-24]; it discards such a message as if it had been sent
// [MQTT-3.1.2-25], so smaller messages still flow.
func TestMQTT5_3_1_2_24_ClientMaximumPacketSize(t *testing.T) {
	t.Parallel()
	forTransports(t, func(t *testing.T) {
		addr := startBroker(t, brokerConfig{})
		sub, _ := connect(t, addr, rc.Connect{Version: 5, ClientID: "small", Clean: true, KeepAlive: 60,
			Props: rc.PropU32(rc.PropMaximumPacketSize, 64)})
		sub.sub("mps/#", 1)
		pub := cleanConnect(t, addr, 5, "pub")
		big := strings.Repeat("b", 200)
		pub.publish("mps/big", big, 0, false, 0)
		pub.publish("mps/big", big, 1, false, 1)
		pub.publish("mps/small", "s0", 0, false, 0)
		pub.publish("mps/small", "s1", 1, false, 2)
		sub.receiveTopic("mps/small", "s0")
		sub.receiveTopic("mps/small", "s1")
		sub.quiet(quietPeriod)
	})
}

// TestMQTT5_4_12_0_1_UnsupportedAuthenticationMethod: a CONNECT with an
// Authentication Method the server does not support gets CONNACK 0x8C
// Bad authentication method (or 0x87 Not authorized) and the connection is
// closed.
func TestMQTT5_4_12_0_1_UnsupportedAuthenticationMethod(t *testing.T) {
	t.Parallel()
	forTransports(t, func(t *testing.T) {
		addr := startBroker(t, brokerConfig{})
		c := dial(t, addr, 5, "auth")
		c.sendBad(rc.Connect{Version: 5, ClientID: "auth", Clean: true, KeepAlive: 60,
			Props: rc.PropStr(rc.PropAuthMethod, "X-NO-SUCH-METHOD")}.Bytes())
		ack := c.connack()
		if ack.Code != 0x8C && ack.Code != 0x87 {
			t.Fatalf("CONNACK code 0x%02x, want 0x8C (or 0x87)", ack.Code)
		}
		if seen := c.closedAfter(); len(seen) > 0 {
			t.Fatalf("packets after a refusing CONNACK: %v", seen)
		}
	})
}

// TestMQTT5_Sec4_12_UnexpectedAUTH: an AUTH packet on a connection that
// did not start enhanced authentication is a protocol error (and AUTH does
// not exist in 3.1.1, where packet type 15 is reserved).
func TestMQTT5_Sec4_12_UnexpectedAUTH(t *testing.T) {
	t.Parallel()
	runBadPackets(t, []badPacketCase{{name: "AUTH", bytes: func(v byte) []byte {
		if v == 4 {
			return []byte{0xF0, 0x00} // packet type 15, reserved in 3.1.1
		}
		return []byte{
			0xF0, 0x02, // AUTH, remaining length 2
			0x18, // reason: Continue authentication
			0x00, // property length 0
		}
	}}}, 0x82, 0x8C, 0x81)
}

// TestMQTT5_3_8_3_3_NoLocal: with No Local set, the server MUST NOT send a
// client the messages it published itself.
func TestMQTT5_3_8_3_3_NoLocal(t *testing.T) {
	t.Parallel()
	forTransports(t, func(t *testing.T) {
		addr := startBroker(t, brokerConfig{})
		self := cleanConnect(t, addr, 5, "self")
		self.sub("nl/t", 0x04|0x01) // QoS 1, No Local
		other := cleanConnect(t, addr, 5, "other")
		other.sub("nl/t", 0x01)
		self.publish("nl/t", "mine", 1, false, 1)
		other.receiveTopic("nl/t", "mine")
		self.quiet(quietPeriod)
		// A second client's publish still reaches self.
		other.send(rc.Publish{Version: 5, Topic: "nl/t", Payload: []byte("yours")}.Bytes())
		self.receiveTopic("nl/t", "yours")
	})
}

// TestMQTT5_3_3_1_13_RetainAsPublished: with Retain As Published the
// forwarded message keeps the publisher's RETAIN flag [MQTT-3.3.1-13];
// without it the flag is cleared [MQTT-3.3.1-12].
func TestMQTT5_3_3_1_13_RetainAsPublished(t *testing.T) {
	t.Parallel()
	forTransports(t, func(t *testing.T) {
		addr := startBroker(t, brokerConfig{})
		rap := cleanConnect(t, addr, 5, "rap")
		rap.sub("rap/t", 0x08) // QoS 0, Retain As Published
		plain := cleanConnect(t, addr, 5, "plain")
		plain.sub("rap/t", 0x00)
		pub := cleanConnect(t, addr, 5, "pub")
		pub.publish("rap/t", "r", 1, true, 1)
		if m := rap.receiveTopic("rap/t", "r"); !m.Retain {
			t.Fatal("Retain As Published subscription got RETAIN 0")
		}
		if m := plain.receiveTopic("rap/t", "r"); m.Retain {
			t.Fatal("plain subscription got RETAIN 1 on a live delivery")
		}
		pub.publish("rap/t", "n", 1, false, 2)
		if m := rap.receiveTopic("rap/t", "n"); m.Retain {
			t.Fatal("Retain As Published turned RETAIN 0 into 1")
		}
	})
}

// TestMQTT5_3_3_1_9_RetainHandling: Retain Handling 0 sends retained
// messages on every subscribe [MQTT-3.3.1-9]; 1 only when the subscription
// is new [MQTT-3.3.1-10]; 2 never [MQTT-3.3.1-11].
func TestMQTT5_3_3_1_9_RetainHandling(t *testing.T) {
	t.Parallel()
	forTransports(t, func(t *testing.T) {
		addr := startBroker(t, brokerConfig{})
		pub := cleanConnect(t, addr, 5, "pub")
		pub.publish("rh/t", "kept", 1, true, 1)
		for _, tc := range []struct {
			name       string
			opts       byte
			first, sec bool // retained message expected on 1st and 2nd subscribe
		}{
			{"0_always", 0x00 | 1, true, true},
			{"1_if_new", 0x10 | 1, true, false},
			{"2_never", 0x20 | 1, false, false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				c := cleanConnect(t, addr, 5, tc.name)
				for i, want := range []bool{tc.first, tc.sec} {
					c.sub("rh/t", tc.opts)
					if want {
						if m := c.receiveTopic("rh/t", "kept"); !m.Retain {
							t.Fatalf("subscribe %d: retained message without RETAIN", i+1)
						}
					}
					c.ping() // and nothing else
				}
			})
		}
	})
}

// TestMQTT5_3_3_4_3_SubscriptionIdentifier: a message delivered because of
// a subscription made with a Subscription Identifier MUST carry it,
// retained messages included; one without carries none.
func TestMQTT5_3_3_4_3_SubscriptionIdentifier(t *testing.T) {
	t.Parallel()
	forTransports(t, func(t *testing.T) {
		addr := startBroker(t, brokerConfig{})
		pub := cleanConnect(t, addr, 5, "pub")
		pub.publish("sid/r", "retained", 1, true, 1)
		sub := cleanConnect(t, addr, 5, "sub")
		codes := sub.subscribe(1, rc.PropVarInt(rc.PropSubscriptionID, 300), rc.Sub{Filter: "sid/#", Opts: 1})
		if len(codes) != 1 || codes[0] != 1 {
			t.Fatalf("SUBACK % x, want 01", codes)
		}
		requireSubIDs(t, sub.receiveTopic("sid/r", "retained"), 300)
		plain := cleanConnect(t, addr, 5, "plain")
		plain.sub("sid/a", 1)

		pub.publish("sid/a", "live", 1, false, 2)
		requireSubIDs(t, sub.receiveTopic("sid/a", "live"), 300)
		requireSubIDs(t, plain.receiveTopic("sid/a", "live"))
	})
}

func requireSubIDs(t *testing.T, m rc.Message, want ...uint32) {
	t.Helper()
	got := m.Props.All(rc.PropSubscriptionID)
	if len(got) != len(want) {
		t.Fatalf("message %q carries Subscription Identifiers %v, want %v", m.Topic, got, want)
	}
	for i := range got {
		if got[i].Int != want[i] {
			t.Fatalf("message %q carries Subscription Identifiers %v, want %v", m.Topic, got, want)
		}
	}
}

// TestMQTT5_3_8_3_4_SharedSubscriptionNoLocal: No Local on a shared
// subscription is a protocol error [MQTT-3.8.3-4]. Expected: DISCONNECT
// 0x82 and close; a SUBACK refusing that filter (code >= 0x80) is also
// accepted, as brokers commonly answer that way.
func TestMQTT5_3_8_3_4_SharedSubscriptionNoLocal(t *testing.T) {
	t.Parallel()
	forTransports(t, func(t *testing.T) {
		skipIfMosquittoDeviates(t, "grants a shared subscription with No Local (SUBACK 0x01)")
		addr := startBroker(t, brokerConfig{})
		c := cleanConnect(t, addr, 5, "shared")
		c.send(rc.Subscribe(5, 1, nil, rc.Sub{Filter: "$share/g/sh/t", Opts: 0x04 | 1}))
		// closeTimeout, not quietPeriod: the close came after 400 ms
		// over WSS in a suite run at load 20 (a broker that answers with
		// a refusing SUBACK instead keeps the connection open: that
		// costs the whole wait, and only such a broker).
		seen, err := c.conn.ExpectClosed(closeTimeout)
		switch {
		case err == nil:
			c.checkDisconnect(seen, 0x82)
			t.Logf("closed after %v", seen)
		case len(seen) == 1 && seen[0].Type == rc.SUBACK:
			sa, perr := rc.ParseSuback(5, seen[0].Body)
			if perr != nil || len(sa.Codes) != 1 || sa.Codes[0] < 0x80 {
				t.Fatalf("got %v, want DISCONNECT 0x82 or a refusing SUBACK", seen[0])
			}
			t.Logf("refused with SUBACK 0x%02x", sa.Codes[0])
		default:
			t.Fatalf("got %v (%v), want DISCONNECT 0x82 or a refusing SUBACK", seen, err)
		}
	})
}

// TestMQTT5_3_1_2_23_SessionExpiryZero: with no Session Expiry Interval (0)
// the session ends with the connection: a Clean Start 0 reconnect finds no
// session and no subscriptions.
func TestMQTT5_3_1_2_23_SessionExpiryZero(t *testing.T) {
	t.Parallel()
	forTransports(t, func(t *testing.T) {
		addr := startBroker(t, brokerConfig{})
		cp := rc.Connect{Version: 5, ClientID: "brief", KeepAlive: 60} // Clean Start 0, no expiry
		c, _ := connect(t, addr, cp)
		c.sub("se/#", 1)
		c.disconnect()
		c, ack := connect(t, addr, cp)
		if ack.SessionPresent {
			t.Fatal("Session Present 1: a session with expiry 0 outlived its connection")
		}
		pub := cleanConnect(t, addr, 5, "pub")
		pub.publish("se/x", "x", 1, false, 1)
		c.quiet(quietPeriod)
	})
}

// TestMQTT5_Sec3_14_2_2_2_DisconnectSessionExpiryAfterZero: a client that
// connected with Session Expiry 0 may not set a non-zero one on
// DISCONNECT. The section (prose, not a numbered statement) says the
// server does not treat that as a valid DISCONNECT and answers DISCONNECT
// 0x82 Protocol Error: so the session is not kept, and the will, not
// cancelled by a valid DISCONNECT, is published [MQTT-3.1.2-8].
func TestMQTT5_Sec3_14_2_2_2_DisconnectSessionExpiryAfterZero(t *testing.T) {
	t.Parallel()
	forTransports(t, func(t *testing.T) {
		addr := startBroker(t, brokerConfig{})
		w := watcher(t, addr, 5, "sneaky")
		cp := rc.Connect{Version: 5, ClientID: "sneaky", KeepAlive: 60, // Clean Start 0, no expiry
			Will: &rc.Will{Topic: "will/sneaky", Payload: "gone", QoS: 1}}
		c, _ := connect(t, addr, cp)
		c.sub("se/#", 1)
		c.sendBad([]byte{
			0xE0, 0x07, // DISCONNECT, remaining length 7
			0x00,                         // reason: Normal disconnection
			0x05,                         // property length 5
			0x11, 0x00, 0x00, 0x00, 0x3C, // Session Expiry Interval 60
		})
		c.expectDisconnect(0x82)
		w.receiveTopic("will/sneaky", "gone")
		cp.Will = nil
		_, ack := connect(t, addr, cp)
		if ack.SessionPresent {
			t.Fatal("Session Present 1: DISCONNECT raised the session expiry from 0")
		}
	})
}

// TestMQTT5_3_3_2_6_MessageExpiryDecremented: a forwarded message carries
// its Message Expiry Interval minus the time it waited in the server
// [MQTT-3.3.2-6].
func TestMQTT5_3_3_2_6_MessageExpiryDecremented(t *testing.T) {
	t.Parallel()
	forTransports(t, func(t *testing.T) {
		addr := startBroker(t, brokerConfig{})
		pub := cleanConnect(t, addr, 5, "pub")
		pub.publish("exp/long", "x", 1, true, 1, rc.PropU32(rc.PropMessageExpiry, 10))
		time.Sleep(1200 * time.Millisecond)
		sub := cleanConnect(t, addr, 5, "sub")
		sub.sub("exp/#", 1)
		m := sub.receiveTopic("exp/long", "x")
		p, ok := m.Props.Get(rc.PropMessageExpiry)
		if !ok || p.Int < 1 || p.Int > 9 {
			t.Fatalf("Message Expiry Interval %d (present %v) after 1.2s of 10s, want 1..9", p.Int, ok)
		}
	})
}

// TestMQTT5_3_3_2_5_ExpiredMessageNotDelivered: once its Message Expiry
// Interval has passed, a message MUST NOT be delivered to a subscriber
// [MQTT-3.3.2-5]: a retained message with a 5s expiry reaches a new
// subscription at first, and within a few seconds after its expiry no
// longer does, while one without expiry still does. 5 s, not 1: at a load
// average of 30 the first subscription came 1.7 s after the publish.
func TestMQTT5_3_3_2_5_ExpiredMessageNotDelivered(t *testing.T) {
	t.Parallel()
	forTransports(t, func(t *testing.T) {
		addr := startBroker(t, brokerConfig{})
		pub := cleanConnect(t, addr, 5, "pub")
		pub.publish("exp/short", "x", 1, true, 1, rc.PropU32(rc.PropMessageExpiry, 5))
		pub.publish("exp/plain", "y", 1, true, 2) // control: no expiry
		attempt := 0
		retained := func() map[string]bool {
			attempt++
			sub := cleanConnect(t, addr, 5, fmt.Sprintf("sub-%d", attempt))
			sub.sub("exp/#", 1)
			got := map[string]bool{}
			for {
				p, err := sub.conn.ReadPacket(quietPeriod)
				if err != nil {
					sub.drop()
					return got
				}
				if m, perr := rc.ParsePublish(5, p.Flags, p.Body); perr == nil && p.Type == rc.PUBLISH {
					got[m.Topic] = true
					sub.ackMessage(m)
				}
			}
		}
		if got := retained(); !got["exp/short"] || !got["exp/plain"] {
			t.Fatalf("right after publishing, a new subscription got %v, want both retained messages", got)
		}
		eventually(t, 10*time.Second, func() error {
			got := retained()
			if !got["exp/plain"] {
				return fmt.Errorf("control message missing: got %v", got)
			}
			if got["exp/short"] {
				return fmt.Errorf("message with a 5s expiry still delivered (attempt %d)", attempt)
			}
			return nil
		})
	})
}
