package interop

import (
	"testing"
	"time"
)

// TestWill_3_1_2_5 checks when the Will Message is and is not published
// [MQTT-3.1.2-8] [MQTT-3.1.2-10]: on a connection closed without
// DISCONNECT, on keep-alive expiry, and never after a normal DISCONNECT.
func TestWill_3_1_2_5(t *testing.T) {
	forEachProto(t, func(t *testing.T, p proto) {
		t.Run("socket_closed", func(t *testing.T) {
			t.Parallel()
			b := startBroker(t, brokerConfig{})
			watch := startMosqSub(t, b, p, mosqSubOpts{topics: []string{"will/#"}, qos: 1})
			c := startPaho(t, b, p, pahoOpts{will: &will{topic: "will/paho", payload: "paho gone", qos: 1}})
			c.killConn()
			expectWill(t, watch.in, "will/paho", "paho gone", 1)
		})
		t.Run("process_killed", func(t *testing.T) {
			t.Parallel()
			b := startBroker(t, brokerConfig{})
			watch := startPaho(t, b, p, pahoOpts{})
			watch.subscribe(t, "will/#", 2, 0)
			js := startJS(t, b, p, jsOpts{Will: map[string]any{"topic": "will/js", "payload": "js gone", "qos": 2}})
			// mqtt.js's connection is dropped as its process's would be
			// (js/peer.js kill); mosquitto_sub's process is killed.
			js.kill(t)
			expectWill(t, watch.in, "will/js", "js gone", 2)
			ms := startMosqSub(t, b, p, mosqSubOpts{topics: []string{"x"}, will: &will{topic: "will/mosq", payload: "mosq gone"}})
			ms.kill()
			expectWill(t, watch.in, "will/mosq", "mosq gone", 0)
		})
		t.Run("keepalive_expired", func(t *testing.T) {
			t.Parallel()
			b := startBroker(t, brokerConfig{})
			watch := startJS(t, b, p, jsOpts{Subscribe: []jsSub{{Topic: "will/#", QoS: 1}}})
			raw := dialRaw(t, b, p, "silent")
			raw.connect(t, rawConnect{id: clientID("silent"), clean: true, keepalive: 2,
				will: &will{topic: "will/silent", payload: "timed out", qos: 1}})
			connected := time.Now()
			// The raw client now sends nothing: the server must close the
			// connection after 1.5 x keep alive [MQTT-3.1.2-24] and publish
			// the will.
			m := expectWill(t, watch.in, "will/silent", "timed out", 1)
			latest := 5 * time.Second
			if b.target == targetMosquitto {
				// mosquitto 2.0 checks keep alive on a whole-second clock
				// once a second, so it is up to ~3s late.
				latest = 7 * time.Second
			}
			if d := m.At.Sub(connected); d < 2500*time.Millisecond || d > latest {
				t.Errorf("will arrived %v after CONNACK, want between 2.5s and %v (keep alive 2s)",
					d.Round(time.Millisecond), latest)
			}
			expectClosed(t, raw, p, 0x8D) // Keep Alive timeout
		})
		t.Run("clean_disconnect", func(t *testing.T) {
			t.Parallel()
			b := startBroker(t, brokerConfig{})
			watch := startMosqSub(t, b, p, mosqSubOpts{topics: []string{"will/#"}, qos: 1})
			c := startPaho(t, b, p, pahoOpts{will: &will{topic: "will/paho", payload: "x", qos: 1}})
			js := startJS(t, b, p, jsOpts{Will: map[string]any{"topic": "will/js", "payload": "x", "qos": 1}})
			c.disconnect(t, 0)
			js.end(t, 0)
			// -E: DISCONNECT (Normal) right after SUBACK. (On SIGTERM an
			// MQTT 5 mosquitto_sub asks for its will: reason 0x04.)
			startMosqSub(t, b, p, mosqSubOpts{topics: []string{"x"}, exitAfterSub: true,
				will: &will{topic: "will/mosq", payload: "x"}})
			// A normal DISCONNECT discards the will [MQTT-3.1.2-10]
			// [MQTT-3.14.4-3].
			watch.in.none(t, time.Second)
			// The watcher still works: only the wills were missing.
			mosqPub(t, b, p, "will/sentinel", "s", mosqPubOpts{qos: 1})
			watch.in.expectTopics(t, []string{"will/sentinel"}, waitMsg, 0)
		})
		if p.level == 5 {
			t.Run("disconnect_with_will", func(t *testing.T) {
				t.Parallel()
				b := startBroker(t, brokerConfig{})
				watch := startJS(t, b, p, jsOpts{Subscribe: []jsSub{{Topic: "will/#", QoS: 1}}})
				c := startPaho(t, b, p, pahoOpts{will: &will{topic: "will/paho", payload: "asked for", qos: 1}})
				// Reason code 0x04 asks the server to publish the will
				// anyway (MQTT 5 §3.14.2.1).
				c.disconnect(t, 0x04)
				expectWill(t, watch.in, "will/paho", "asked for", 1)
				// mosquitto_sub -V mqttv5 disconnects with 0x04 on SIGTERM.
				ms := startMosqSub(t, b, p, mosqSubOpts{topics: []string{"x"},
					will: &will{topic: "will/mosq", payload: "sigterm", qos: 1}})
				ms.terminate(t)
				expectWill(t, watch.in, "will/mosq", "sigterm", 1)
			})
		}
	})
}

// expectWill waits for one will message and checks it.
func expectWill(t *testing.T, in *inbox, topic, payload string, qos byte) message {
	t.Helper()
	m := in.next(t, 8*time.Second)
	if m.Topic != topic || m.Payload != payload || m.QoS != qos {
		t.Errorf("%s: got %v, want will %s %q q%d", in.name, m, topic, payload, qos)
	}
	return m
}

// expectClosed reads until the server closes c's connection. An MQTT 5
// server may first send DISCONNECT, whose reason code must then be reason.
func expectClosed(t *testing.T, c *rawClient, p proto, reason byte) {
	t.Helper()
	for i := 0; i < 10; i++ {
		pk, err := c.read(3 * time.Second)
		switch {
		case isTimeout(err):
			t.Errorf("%s: server did not close the connection", c.name)
			return
		case err != nil:
			return // closed
		case pk.Type == pktDisconnect && p.level == 5:
			if pk.Code != reason {
				t.Errorf("%s: DISCONNECT reason %#x, want %#x", c.name, pk.Code, reason)
			}
		case pk.Type == pktPublish:
			// a message for the client; irrelevant here
		default:
			t.Errorf("%s: unexpected packet %+v before close", c.name, pk)
		}
	}
}
