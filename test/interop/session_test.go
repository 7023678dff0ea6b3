package interop

import (
	"slices"
	"testing"
	"time"
)

const sessionExpiry = 300 // seconds, for MQTT 5 persistent sessions

// TestTakeover_3_1_4 connects a second client with the id of a connected
// one: the server disconnects the first [MQTT-3.1.4-2] (MQTT 5: with
// DISCONNECT 0x8E Session taken over [MQTT-3.14.2.1]), the second inherits
// the persistent session with its subscriptions [MQTT-3.2.2-2], and works.
func TestTakeover_3_1_4(t *testing.T) {
	forEachProto(t, func(t *testing.T, p proto) {
		t.Run("paho_then_mqttjs", func(t *testing.T) {
			t.Parallel()
			b := startBroker(t, brokerConfig{})
			id := clientID("PonyRemoteControl")
			first := startPaho(t, b, p, pahoOpts{id: id, persistent: true, sessionExpiry: sessionExpiry})
			first.subscribe(t, "take/t", 1, 0)

			second := startJS(t, b, p, jsPersistent(p, jsOpts{ClientID: id}, sessionExpiry))
			if !second.connack.SessionPresent {
				t.Errorf("second client: session present 0, want 1")
			}
			if wantTakeoverDisconnect(b, p) {
				select {
				case d := <-first.serverDisc:
					if d.ReasonCode != 0x8E {
						t.Errorf("first client: DISCONNECT reason %#x, want 0x8E", d.ReasonCode)
					}
				case <-time.After(waitMsg):
					t.Errorf("first client: no DISCONNECT from the server")
				}
			} else {
				first.waitLost(t, waitMsg)
			}

			checkTakenOver(t, b, p, second.in, first.in, func(payload string) {
				second.publish(t, "take/t", payload, 1, false, nil)
			})
		})
		t.Run("mqttjs_then_paho", func(t *testing.T) {
			t.Parallel()
			b := startBroker(t, brokerConfig{})
			id := clientID("PonyRemoteControl")
			first := startJS(t, b, p, jsPersistent(p, jsOpts{ClientID: id,
				Subscribe: []jsSub{{Topic: "take/t", QoS: 1}}}, sessionExpiry))

			second := startPaho(t, b, p, pahoOpts{id: id, persistent: true, sessionExpiry: sessionExpiry})
			if !second.sessionPresent {
				t.Errorf("second client: session present 0, want 1")
			}
			first.waitEvent(t, waitMsg, "close")
			if wantTakeoverDisconnect(b, p) {
				ev, ok := first.events.claim(0, func(ev jsEvent) bool { return ev.Event == "disconnect" })
				if !ok || ev.ReasonCode != 0x8E {
					t.Errorf("first client: want DISCONNECT 0x8E before close, got %+v (received: %v)", ev, ok)
				}
			}

			checkTakenOver(t, b, p, second.in, first.in, func(payload string) {
				second.publish(t, "take/t", payload, 1, false)
			})
		})
	})
}

// wantTakeoverDisconnect says whether the first client must see DISCONNECT
// 0x8E. mosquitto 2.0 only closes the connection, which [MQTT-3.1.4-3]
// allows (§4.13 makes the DISCONNECT a MAY); Roost sends it.
func wantTakeoverDisconnect(b *testBroker, p proto) bool {
	return p.level == 5 && b.target != targetMosquitto
}

// checkTakenOver publishes to the first client's subscription, from another
// client and from the second client itself: only the second receives.
func checkTakenOver(t *testing.T, b *testBroker, p proto, second, first *inbox, publishFromSecond func(string)) {
	t.Helper()
	mosqPub(t, b, p, "take/t", "inherited", mosqPubOpts{qos: 1})
	if m := second.next(t, waitMsg); m.Payload != "inherited" {
		t.Errorf("second client got %v, want \"inherited\" through the inherited subscription", m)
	}
	publishFromSecond("own")
	if m := second.next(t, waitMsg); m.Payload != "own" {
		t.Errorf("second client got %v, want its own publish \"own\"", m)
	}
	first.none(t, settle)
}

// TestOfflineQueue_3_1_2_4 checks that QoS 1 and 2 messages published while
// a persistent session is offline (3.1.1 Clean Session 0; MQTT 5 Clean Start
// 0 with a Session Expiry Interval) are delivered on reconnect with Session
// Present 1 [MQTT-3.1.2-5] [MQTT-3.2.2-2], at min(pub, sub) QoS.
func TestOfflineQueue_3_1_2_4(t *testing.T) {
	forEachProto(t, func(t *testing.T, p proto) {
		t.Run("mosquitto_sub_then_mqttjs", func(t *testing.T) {
			t.Parallel()
			b := startBroker(t, brokerConfig{})
			id := clientID("PonyRemoteControl")
			startMosqSub(t, b, p, mosqSubOpts{id: id, topics: []string{"q/t"}, qos: 2,
				persistent: true, sessionExpiry: sessionExpiry, exitAfterSub: true})
			pub := startPaho(t, b, p, pahoOpts{})
			pub.publish(t, "q/t", "one", 1, false)
			pub.publish(t, "q/t", "two", 2, false)

			back := startJS(t, b, p, jsPersistent(p, jsOpts{ClientID: id}, sessionExpiry))
			if !back.connack.SessionPresent {
				t.Errorf("reconnect: session present 0, want 1")
			}
			checkQueued(t, back.in)
		})
		t.Run("mqttjs_then_paho", func(t *testing.T) {
			t.Parallel()
			b := startBroker(t, brokerConfig{})
			id := clientID("PonyRemoteControl")
			js := startJS(t, b, p, jsPersistent(p, jsOpts{ClientID: id,
				Subscribe: []jsSub{{Topic: "q/t", QoS: 2}}}, sessionExpiry))
			js.end(t, 0)
			mosqPub(t, b, p, "q/t", "one", mosqPubOpts{qos: 1})
			mosqPub(t, b, p, "q/t", "two", mosqPubOpts{qos: 2})

			back := startPaho(t, b, p, pahoOpts{id: id, persistent: true, sessionExpiry: sessionExpiry})
			if !back.sessionPresent {
				t.Errorf("reconnect: session present 0, want 1")
			}
			checkQueued(t, back.in)
		})
	})
}

// checkQueued expects exactly "one" at QoS 1 and "two" at QoS 2.
func checkQueued(t *testing.T, in *inbox) {
	t.Helper()
	got := in.collect(t, 2, waitMsg)
	in.none(t, settle)
	slices.SortFunc(got, func(a, b message) int { return int(a.QoS) - int(b.QoS) })
	if got[0].Payload != "one" || got[0].QoS != 1 || got[1].Payload != "two" || got[1].QoS != 2 {
		t.Errorf("%s: got %v, want \"one\" q1 and \"two\" q2", in.name, got)
	}
}
