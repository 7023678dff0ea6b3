package topic_test

import (
	"fmt"

	"github.com/roost-mqtt/roost/topic"
)

func ExampleMatch() {
	fmt.Println(topic.Match("System/+", "System/iOS"))
	fmt.Println(topic.Match("System/+", "System/iOS/123"))
	fmt.Println(topic.Match("System/#", "System"))
	fmt.Println(topic.Match("#", "$SYS/broker/uptime"))
	fmt.Println(topic.Match("$SYS/#", "$SYS/broker/uptime"))
	// Output:
	// true
	// false
	// true
	// false
	// true
}

func ExampleParseShare() {
	group, rest, shared, err := topic.ParseShare("$share/workers/jobs/+")
	fmt.Printf("%q %q %v %v\n", group, rest, shared, err)
	_, _, shared, err = topic.ParseShare("$share//jobs")
	fmt.Println(shared, err)
	// Output:
	// "workers" "jobs/+" true <nil>
	// true topic: invalid shared subscription: empty ShareName
}

func ExampleTree() {
	type opts struct{ qos byte }
	subs := topic.NewTree[string, opts]()
	for _, f := range []string{"sensors/+/temp", "$share/workers/sensors/#"} {
		if err := topic.ValidFilter(f, 0); err != nil {
			panic(err)
		}
		group, filter, _, _ := topic.ParseShare(f)
		subs.Subscribe(filter, group, "client-1", opts{qos: 1})
	}
	subs.Match("sensors/kitchen/temp", func(filter, group string, client string, o opts) {
		fmt.Printf("%s group=%q filter=%s qos=%d\n", client, group, filter, o.qos)
	})
	// Unordered output:
	// client-1 group="" filter=sensors/+/temp qos=1
	// client-1 group="workers" filter=sensors/# qos=1
}

func ExampleRetained() {
	var retained topic.Retained[string]
	retained.Set("sensors/kitchen/temp", "21.5")
	retained.Set("sensors/hall/temp", "19.0")
	retained.Set("$SYS/broker/uptime", "42")
	retained.MatchFilter("+/+/temp", func(name, payload string) {
		fmt.Println(name, payload)
	})
	// Unordered output:
	// sensors/kitchen/temp 21.5
	// sensors/hall/temp 19.0
}
