package interop

import (
	"testing"
	"time"
)

const (
	waitMsg = 5 * time.Second        // how long a message that must come may take
	settle  = 300 * time.Millisecond // how long to watch for one that must not
)

// TestWildcards_4_7 checks single- and multi-level wildcards [MQTT-4.7.1]
// and that leading wildcards do not match $-topics [MQTT-4.7.2-1], with
// subscribers and publishers from different client stacks.
func TestWildcards_4_7(t *testing.T) {
	forEachProto(t, func(t *testing.T, p proto) {
		b := startBroker(t, brokerConfig{})
		plus := startJS(t, b, p, jsOpts{Subscribe: []jsSub{{Topic: "System/+", QoS: 1}}})
		multi := startMosqSub(t, b, p, mosqSubOpts{topics: []string{"System/#"}, qos: 1})
		all := startPaho(t, b, p, pahoOpts{})
		all.subscribe(t, "#", 1, 0)
		dollar := startMosqSub(t, b, p, mosqSubOpts{topics: []string{"$foo/#"}, qos: 1})

		pub := startPaho(t, b, p, pahoOpts{})
		topics := []string{"System", "System/iOS", "System/Android", "System/iOS/123", "$foo/bar", "Other/x"}
		for i, tp := range topics {
			if i%2 == 0 {
				mosqPub(t, b, p, tp, "m-"+tp, mosqPubOpts{qos: 1})
			} else {
				pub.publish(t, tp, "m-"+tp, 1, false)
			}
		}

		// "+" matches exactly one level [MQTT-4.7.1-3].
		plus.in.expectTopics(t, []string{"System/iOS", "System/Android"}, waitMsg, settle)
		// "#" matches the parent level and any number of children [MQTT-4.7.1-2].
		multi.in.expectTopics(t, []string{"System", "System/iOS", "System/Android", "System/iOS/123"}, waitMsg, settle)
		// A leading "#" does not match "$foo/bar" [MQTT-4.7.2-1].
		all.in.expectTopics(t, []string{"System", "System/iOS", "System/Android", "System/iOS/123", "Other/x"}, waitMsg, settle)
		// ...while a filter that spells out "$foo" does: the publish was routed.
		dollar.in.expectTopics(t, []string{"$foo/bar"}, waitMsg, settle)
	})
}

// TestWildcardsSkipSys_4_7_2 checks that "#" and "+/#" do not receive the
// broker's own $SYS topics while "$SYS/#" does [MQTT-4.7.2-1].
func TestWildcardsSkipSys_4_7_2(t *testing.T) {
	forEachProto(t, func(t *testing.T, p proto) {
		b := startBroker(t, brokerConfig{sysInterval: time.Second})
		all := startMosqSub(t, b, p, mosqSubOpts{topics: []string{"#"}})
		plus := startPaho(t, b, p, pahoOpts{})
		plus.subscribe(t, "+/#", 0, 0)
		sys := startJS(t, b, p, jsOpts{Subscribe: []jsSub{{Topic: "$SYS/#", QoS: 0}}})

		first := sys.in.next(t, 5*time.Second)
		t.Logf("first $SYS message: %v", first)
		// Give the broker more than one more interval to publish $SYS.
		all.in.none(t, 1500*time.Millisecond)
		plus.in.none(t, 0)
	})
}
