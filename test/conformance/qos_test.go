package conformance

import (
	"testing"

	rc "github.com/roost-mqtt/roost/internal/rawclient"
)

// TestMQTT_4_3_2_2_PubackForQoS1: the receiver of a QoS 1 PUBLISH MUST
// answer with a PUBACK carrying its packet identifier (3.1.1 numbering; in
// 5.0, section 4.3.2 and [MQTT-2.2.1-5]).
func TestMQTT_4_3_2_2_PubackForQoS1(t *testing.T) {
	t.Parallel()
	forVersions(t, func(t *testing.T, v byte) {
		addr := startBroker(t, brokerConfig{})
		c := cleanConnect(t, addr, v, "pub")
		c.send(rc.Frame(0x32, // PUBLISH QoS 1
			rc.Str("q1/t"),     // topic
			[]byte{0xBE, 0xEF}, // packet id 0xBEEF
			noProps(v),         // properties
			[]byte("x")))       // payload
		c.expectAck(rc.PUBACK, 0xBEEF)
	})
}

// TestMQTT_4_3_3_2_QoS2ExactlyOnce: the receiver of a QoS 2 PUBLISH MUST
// answer PUBREC, answer a repeated PUBLISH with the same packet identifier
// before PUBREL with PUBREC again without delivering it twice, and answer
// PUBREL with PUBCOMP. Once completed, the identifier may be reused for a
// new message. (3.1.1 numbering; 5.0 restates the receiver's duties in
// section 4.3.3 under other numbers.)
func TestMQTT_4_3_3_2_QoS2ExactlyOnce(t *testing.T) {
	t.Parallel()
	forVersions(t, func(t *testing.T, v byte) {
		addr := startBroker(t, brokerConfig{})
		sub := cleanConnect(t, addr, v, "sub")
		sub.sub("q2/#", 2)
		pub := cleanConnect(t, addr, v, "pub")
		publish := func(dup byte, payload string) []byte {
			return rc.Frame(0x34|dup, // PUBLISH QoS 2, DUP as given
				rc.Str("q2/t"),     // topic
				[]byte{0x00, 0x07}, // packet id 7
				noProps(v),         // properties
				[]byte(payload))    // payload
		}
		pub.send(publish(0x00, "first"))
		pub.expectAck(rc.PUBREC, 7)
		pub.send(publish(0x08, "first")) // DUP=1 resend before PUBREL
		pub.expectAck(rc.PUBREC, 7)
		pub.send([]byte{
			0x62, 0x02, // PUBREL, flags 0010
			0x00, 0x07, // packet id 7
		})
		pub.expectAck(rc.PUBCOMP, 7)

		if m := sub.receiveTopic("q2/t", "first"); m.QoS != 2 {
			t.Fatalf("delivered at QoS %d, want 2", m.QoS)
		}
		sub.quiet(quietPeriod)

		// Packet id 7 is free again: this is a new message.
		pub.send(publish(0x00, "second"))
		pub.expectAck(rc.PUBREC, 7)
		pub.send(rc.Ack(rc.PUBREL, 7))
		pub.expectAck(rc.PUBCOMP, 7)
		sub.receiveTopic("q2/t", "second")
	})
}

// TestMQTT_4_4_0_1_ResendOnResume: when a client resumes a session, the
// server MUST resend unacknowledged PUBLISH packets with their original
// packet identifiers and DUP set to 1 [MQTT-3.3.1-1], and PUBREL packets
// for QoS 2 messages that were PUBREC'd but not completed.
func TestMQTT_4_4_0_1_ResendOnResume(t *testing.T) {
	t.Parallel()
	forVersions(t, func(t *testing.T, v byte) {
		t.Run("PUBLISH", func(t *testing.T) {
			t.Parallel()
			addr := startBroker(t, brokerConfig{})
			sub, _ := connect(t, addr, persistent(v, "sub"))
			sub.sub("rs/#", 1)
			pub := cleanConnect(t, addr, v, "pub")
			pub.publish("rs/a", "unacked", 1, false, 1)
			first := sub.message() // and no PUBACK
			if first.Dup {
				t.Fatal("first delivery has DUP 1")
			}
			sub.drop()

			again, ack := connect(t, addr, persistent(v, "sub"))
			if !ack.SessionPresent {
				t.Fatal("Session Present 0 on resume")
			}
			m := again.message()
			if m.ID != first.ID || m.Topic != "rs/a" || string(m.Payload) != "unacked" || m.QoS != 1 {
				t.Fatalf("resent %+v, want id %d topic rs/a payload unacked QoS 1", m, first.ID)
			}
			if !m.Dup {
				t.Fatal("resent PUBLISH has DUP 0, want 1 [MQTT-3.3.1-1]")
			}
			again.send(rc.Ack(rc.PUBACK, m.ID))
			again.quiet(quietPeriod)
		})
		t.Run("PUBREL", func(t *testing.T) {
			t.Parallel()
			addr := startBroker(t, brokerConfig{})
			sub, _ := connect(t, addr, persistent(v, "sub"))
			sub.sub("rs/#", 2)
			pub := cleanConnect(t, addr, v, "pub")
			pub.publish("rs/b", "half", 2, false, 1)
			m := sub.message()
			sub.send(rc.Ack(rc.PUBREC, m.ID))
			sub.expectAck(rc.PUBREL, m.ID) // and no PUBCOMP
			sub.drop()

			again, ack := connect(t, addr, persistent(v, "sub"))
			if !ack.SessionPresent {
				t.Fatal("Session Present 0 on resume")
			}
			again.expectAck(rc.PUBREL, m.ID)
			again.send(rc.Ack(rc.PUBCOMP, m.ID))
			again.quiet(quietPeriod)
		})
	})
}
