package interop

import (
	"testing"
)

// TestRetained_3_3_1_3 sets, updates and clears a retained message with
// different publishers and checks what live and new subscribers see.
func TestRetained_3_3_1_3(t *testing.T) {
	forEachProto(t, func(t *testing.T, p proto) {
		b := startBroker(t, brokerConfig{})
		live := startJS(t, b, p, jsOpts{Subscribe: []jsSub{{Topic: "r/t", QoS: 2}}})
		pub := startPaho(t, b, p, pahoOpts{})

		// Set, then update: an established subscription gets each publish
		// with RETAIN 0 [MQTT-3.3.1-9] (MQTT 5: Retain As Published is 0
		// [MQTT-3.3.1-12]).
		mosqPub(t, b, p, "r/t", "v1", mosqPubOpts{qos: 1, retain: true})
		pub.publish(t, "r/t", "v2", 2, true)
		for _, want := range []string{"v1", "v2"} {
			m := live.in.next(t, waitMsg)
			if m.Payload != want || m.Retain {
				t.Errorf("live subscriber got %v, want %q without retain", m, want)
			}
		}

		// A new subscriber gets only the latest retained message, with
		// RETAIN 1 [MQTT-3.3.1-6] [MQTT-3.3.1-8], at min(2, 2) = QoS 2.
		late := startMosqSub(t, b, p, mosqSubOpts{topics: []string{"r/t"}, qos: 2})
		if got := late.in.expectTopics(t, []string{"r/t"}, waitMsg, settle); len(got) == 1 {
			if m := got[0]; m.Payload != "v2" || !m.Retain || m.QoS != 2 {
				t.Errorf("new subscriber got %v, want \"v2\" q2 retain", m)
			}
		}

		// A zero-length retained publish is delivered as usual and clears
		// the topic [MQTT-3.3.1-10] [MQTT-3.3.1-11].
		mosqPub(t, b, p, "r/t", "", mosqPubOpts{qos: 1, retain: true})
		if m := live.in.next(t, waitMsg); m.Payload != "" {
			t.Errorf("live subscriber got %v, want the empty clearing message", m)
		}
		late.in.next(t, waitMsg)
		mosqPub(t, b, p, "r/other", "o", mosqPubOpts{qos: 1, retain: true})

		// A subscriber after the clear gets r/other (so retained messages
		// still flow) and nothing for r/t.
		after := startPaho(t, b, p, pahoOpts{})
		after.subscribe(t, "r/#", 1, 0)
		if got := after.in.expectTopics(t, []string{"r/other"}, waitMsg, settle); len(got) == 1 && !got[0].Retain {
			t.Errorf("after clear: got %v, want retain flag set", got[0])
		}
	})
}

// TestRetainedQoS_3_3_1_3 checks that a retained message is delivered at
// the minimum of its QoS and the subscription's [MQTT-3.8.4-6], for every
// combination, to three different client stacks.
func TestRetainedQoS_3_3_1_3(t *testing.T) {
	forEachProto(t, func(t *testing.T, p proto) {
		b := startBroker(t, brokerConfig{})
		pub := startPaho(t, b, p, pahoOpts{})
		for q := byte(0); q <= 2; q++ {
			pub.publish(t, "rq/"+string('0'+q), "retained", q, true)
		}
		// A first reader proves all three are stored (a QoS 0 publish has
		// no acknowledgement to wait for).
		probe := startMosqSub(t, b, p, mosqSubOpts{topics: []string{"rq/+"}, qos: 2})
		probe.in.collect(t, 3, waitMsg)

		subs := []struct {
			qos byte
			in  *inbox
		}{
			{0, startMosqSub(t, b, p, mosqSubOpts{topics: []string{"rq/+"}, qos: 0}).in},
			{1, startJS(t, b, p, jsOpts{Subscribe: []jsSub{{Topic: "rq/+", QoS: 1}}}).in},
		}
		ps := startPaho(t, b, p, pahoOpts{})
		ps.subscribe(t, "rq/+", 2, 0)
		subs = append(subs, struct {
			qos byte
			in  *inbox
		}{2, ps.in})

		for _, s := range subs {
			got := s.in.expectTopics(t, []string{"rq/0", "rq/1", "rq/2"}, waitMsg, settle)
			for _, m := range got {
				pubQoS := m.Topic[len(m.Topic)-1] - '0'
				if want := min(pubQoS, s.qos); m.QoS != want || !m.Retain {
					t.Errorf("%s (sub QoS %d): got %v, want QoS %d with retain", s.in.name, s.qos, m, want)
				}
			}
		}
	})
}
