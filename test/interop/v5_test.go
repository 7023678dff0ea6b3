package interop

import (
	"slices"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// TestTopicAlias_3_3_2_3_4 has a paho.golang publisher set topic alias 1,
// publish with the alias alone (empty topic), remap the alias and use it
// again [MQTT-3.3.2-12]. Subscribers on every stack see the real topic: a
// 3.1.1 mosquitto_sub, an MQTT 5 mqtt.js that accepts aliases from the
// server (Topic Alias Maximum 10), and an MQTT 5 paho that does not.
func TestTopicAlias_3_3_2_3_4(t *testing.T) {
	forTransports(t, func(t *testing.T) {
		t.Run(v5.name, func(t *testing.T) {
			t.Parallel()
			b := startBroker(t, brokerConfig{})
			subs := []*inbox{
				startMosqSub(t, b, v311, mosqSubOpts{topics: []string{"alias/#"}, qos: 1}).in,
				startJS(t, b, v5, jsOpts{Properties: map[string]any{"topicAliasMaximum": 10},
					Subscribe: []jsSub{{Topic: "alias/#", QoS: 1}}}).in,
			}
			ps := startPaho(t, b, v5, pahoOpts{})
			ps.subscribe(t, "alias/#", 1, 0)
			subs = append(subs, ps.in)

			pub := startPaho(t, b, v5, pahoOpts{})
			one := uint16(1)
			for _, m := range []struct{ topic, payload string }{
				{"alias/first", "1"},  // sets alias 1
				{"", "2"},             // alias 1 alone
				{"alias/second", "3"}, // remaps alias 1
				{"", "4"},
			} {
				pub.publish5(t, &paho.Publish{Topic: m.topic, Payload: []byte(m.payload), QoS: 1,
					Properties: &paho.PublishProperties{TopicAlias: &one}})
			}

			want := []string{"alias/first 1", "alias/first 2", "alias/second 3", "alias/second 4"}
			for _, in := range subs {
				var got []string
				for _, m := range in.settled(len(want), waitMsg, settle) {
					got = append(got, m.Topic+" "+m.Payload)
				}
				slices.Sort(got)
				if !slices.Equal(got, want) {
					t.Errorf("%s: got %q, want %q", in.name, got, want)
				}
			}
		})
	})
}

// TestMessageExpiry_3_3_2_3_3 queues QoS 1 messages for an offline
// persistent session: one with Message Expiry Interval 1, one with 60 and
// one without. After 2s the first is gone [MQTT-3.3.2-5]; the second comes
// with its interval reduced by the time it waited [MQTT-3.3.2-6]. The
// publishers speak MQTT 5; the subscriber speaks each version (expiry
// applies to the message, whoever receives it).
func TestMessageExpiry_3_3_2_3_3(t *testing.T) {
	forEachProto(t, func(t *testing.T, p proto) {
		b := startBroker(t, brokerConfig{})
		id := clientID("PonyRemoteControl")
		sub := startPaho(t, b, p, pahoOpts{id: id, persistent: true, sessionExpiry: sessionExpiry})
		sub.subscribe(t, "exp/t", 1, 0)
		sub.disconnect(t, 0)

		mosqPub(t, b, v5, "exp/t", "short", mosqPubOpts{qos: 1, expiry: 1})
		js := startJS(t, b, v5, jsOpts{})
		js.publish(t, "exp/t", "long", 1, false, map[string]any{"messageExpiryInterval": 60})
		js.publish(t, "exp/t", "forever", 1, false, nil)
		queued := time.Now()
		time.Sleep(2100 * time.Millisecond) // wall-clock expiry: nothing to poll

		back := startJS(t, b, p, jsPersistent(p, jsOpts{ClientID: id}, sessionExpiry))
		if !back.connack.SessionPresent {
			t.Errorf("reconnect: session present 0, want 1")
		}
		got := back.in.settled(2, waitMsg, settle)
		waited := time.Since(queued)
		var payloads []string
		for _, m := range got {
			if m.Payload == "short" && m.Dup {
				// The subscriber's DISCONNECT and mosquitto_pub's PUBLISH
				// are on different connections: when the PUBLISH was
				// handled first, onward delivery had started, and the
				// unacknowledged message is rightly sent again
				// [MQTT-4.4.0-1]; expiry only deletes copies whose
				// delivery had not started [MQTT-3.3.2-5].
				continue
			}
			payloads = append(payloads, m.Payload)
			switch {
			case p.level != 5:
			case m.Payload == "long" && m.Expiry == nil:
				t.Errorf("%q arrived without a message expiry interval", m.Payload)
			case m.Payload == "long" && (*m.Expiry > 58 || *m.Expiry < 60-uint32(waited/time.Second)-1):
				t.Errorf("%q arrived with expiry %ds after waiting %v, want 60s less the wait", m.Payload, *m.Expiry, waited.Round(time.Millisecond))
			case m.Payload == "forever" && m.Expiry != nil:
				t.Errorf("%q arrived with expiry %d, want none", m.Payload, *m.Expiry)
			}
		}
		slices.Sort(payloads)
		if !slices.Equal(payloads, []string{"forever", "long"}) {
			t.Errorf("after 2s offline got %v, want \"long\" and \"forever\" (\"short\" expired)", got)
		}
	})
}
