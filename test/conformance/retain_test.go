package conformance

import (
	"testing"
)

// The retained-message statements are numbered as in 3.1.1; 5.0 words the
// same rules as [MQTT-3.3.1-5] to [MQTT-3.3.1-8] and, with Retain As
// Published 0, [MQTT-3.3.1-12].

// TestMQTT_3_3_1_5_RetainedMessageStored: a PUBLISH with RETAIN 1 MUST be
// stored [MQTT-3.3.1-5] and sent to a later matching subscription
// [MQTT-3.3.1-6] with its RETAIN flag set to 1 [MQTT-3.3.1-8].
func TestMQTT_3_3_1_5_RetainedMessageStored(t *testing.T) {
	t.Parallel()
	forVersions(t, func(t *testing.T, v byte) {
		addr := startBroker(t, brokerConfig{})
		pub := cleanConnect(t, addr, v, "pub")
		pub.publish("rt/a", "hello", 1, true, 1)
		sub := cleanConnect(t, addr, v, "sub")
		sub.sub("rt/#", 1)
		m := sub.receiveTopic("rt/a", "hello")
		if !m.Retain {
			t.Fatal("retained message delivered to a new subscription with RETAIN 0")
		}
		if m.QoS != 1 {
			t.Fatalf("retained message delivered at QoS %d, want 1", m.QoS)
		}
	})
}

// TestMQTT_3_3_1_7_RetainedMessageReplaced: a new retained message, even
// at QoS 0, replaces the one stored for its topic ([MQTT-3.3.1-7] in
// 3.1.1, where storing the QoS 0 one is a SHOULD; [MQTT-3.3.1-5] in 5.0,
// where it is a MUST).
func TestMQTT_3_3_1_7_RetainedMessageReplaced(t *testing.T) {
	t.Parallel()
	forVersions(t, func(t *testing.T, v byte) {
		addr := startBroker(t, brokerConfig{})
		pub := cleanConnect(t, addr, v, "pub")
		pub.publish("rt/a", "one", 1, true, 1)
		pub.publish("rt/a", "two", 0, true, 0)
		pub.ping() // the QoS 0 publish has been processed
		sub := cleanConnect(t, addr, v, "sub")
		sub.sub("rt/a", 1)
		if m := sub.receiveTopic("rt/a", "two"); !m.Retain || m.QoS != 0 {
			t.Fatalf("got RETAIN %v QoS %d, want RETAIN 1 QoS 0", m.Retain, m.QoS)
		}
		sub.quiet(quietPeriod)
	})
}

// TestMQTT_3_3_1_9_RetainFlagZeroOnLiveDelivery: a retained message sent
// to an existing subscription MUST carry RETAIN 0 ([MQTT-3.3.1-9] in
// 3.1.1; in 5.0 [MQTT-3.3.1-12] when Retain As Published is 0).
func TestMQTT_3_3_1_9_RetainFlagZeroOnLiveDelivery(t *testing.T) {
	t.Parallel()
	forVersions(t, func(t *testing.T, v byte) {
		addr := startBroker(t, brokerConfig{})
		sub := cleanConnect(t, addr, v, "sub")
		sub.sub("rt/#", 0)
		pub := cleanConnect(t, addr, v, "pub")
		pub.publish("rt/live", "now", 1, true, 1)
		if m := sub.receiveTopic("rt/live", "now"); m.Retain {
			t.Fatal("live delivery carried RETAIN 1")
		}
	})
}

// TestMQTT_3_3_1_10_EmptyRetainedPayloadClears: a retained PUBLISH with an
// empty payload removes the retained message [MQTT-3.3.1-10] and is not
// itself stored [MQTT-3.3.1-11]; it is still delivered to existing
// subscriptions as a normal message.
func TestMQTT_3_3_1_10_EmptyRetainedPayloadClears(t *testing.T) {
	t.Parallel()
	forVersions(t, func(t *testing.T, v byte) {
		addr := startBroker(t, brokerConfig{})
		live := cleanConnect(t, addr, v, "live")
		live.sub("rt/#", 0)
		pub := cleanConnect(t, addr, v, "pub")
		pub.publish("rt/a", "stored", 1, true, 1)
		live.receiveTopic("rt/a", "stored")
		pub.publish("rt/a", "", 1, true, 2)
		live.receiveTopic("rt/a", "")
		late := cleanConnect(t, addr, v, "late")
		late.sub("rt/#", 1)
		late.quiet(quietPeriod)
	})
}

// TestMQTT_3_3_1_12_NonRetainedNotStored: a PUBLISH with RETAIN 0 MUST NOT
// be stored as, nor replace, the retained message ([MQTT-3.3.1-12] in
// 3.1.1, [MQTT-3.3.1-8] in 5.0).
func TestMQTT_3_3_1_12_NonRetainedNotStored(t *testing.T) {
	t.Parallel()
	forVersions(t, func(t *testing.T, v byte) {
		addr := startBroker(t, brokerConfig{})
		pub := cleanConnect(t, addr, v, "pub")
		pub.publish("rt/a", "keep", 1, true, 1)
		pub.publish("rt/a", "transient", 1, false, 2)
		pub.publish("rt/b", "transient", 1, false, 3)
		sub := cleanConnect(t, addr, v, "sub")
		sub.sub("rt/#", 1)
		sub.receiveTopic("rt/a", "keep")
		sub.quiet(quietPeriod)
	})
}
