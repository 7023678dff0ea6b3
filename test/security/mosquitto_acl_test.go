package security

import (
	"slices"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/auth"
	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/mosquittotest"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// mosquittoACL uses only what the two brokers are documented to treat
// alike: no deny rules (Roost lets a deny win anywhere), no $SYS, and
// deliveries rather than SUBACKs (mosquitto grants every subscription).
const mosquittoACL = `# anonymous clients
topic read public/#

user alice
topic readwrite alice/#
topic read public/#

user bob
topic write public/#
topic read bob/#

user admin
topic readwrite #

pattern readwrite devices/%c/#
pattern read inbox/%u
`

// TestACLFileSameAsMosquitto runs one ACL file in mosquitto's syntax in
// mosquitto and in Roost, lets every publisher publish to every topic, and
// requires that each subscriber receives exactly the same messages from
// both brokers.
func TestACLFileSameAsMosquitto(t *testing.T) {
	t.Parallel()
	aclPath := writeFile(t, "acl", mosquittoACL)

	acl, err := auth.LoadACLFile(aclPath)
	if err != nil {
		t.Fatal(err)
	}
	roost := deliveries(t, start(t, broker.Options{Authorizer: acl}))

	addr := mosquittotest.Start(t, "acl_file "+aclPath).Addr
	mosquitto := deliveries(t, addr)

	t.Logf("deliveries (both brokers): %q", mosquitto)
	for who, want := range mosquitto {
		if got := roost[who]; !slices.Equal(got, want) {
			t.Errorf("%s received\n  from Roost:     %q\n  from mosquitto: %q", who, got, want)
		}
	}
	if len(mosquitto["alice"]) == 0 || len(mosquitto["anonymous"]) == 0 {
		t.Errorf("mosquitto delivered too little to compare: %q", mosquitto)
	}
}

// deliveries connects the subscribers, has each publisher publish to each
// topic, and returns what every subscriber received, as sorted
// "topic<-publisher" strings.
func deliveries(t *testing.T, addr string) map[string][]string {
	t.Helper()
	subs := map[string]*mqtttest.Client{
		"anonymous": conn(t, addr, packet.V311, "", "r-anon"),
		"alice":     conn(t, addr, packet.V311, "alice", "r-alice"),
		"bob":       conn(t, addr, packet.V311, "bob", "r-bob"),
		"dev1":      conn(t, addr, packet.V311, "", "dev1"),
	}
	for who, c := range subs {
		c.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "#", Options: packet.SubOptions{QoS: 1}}}})
		if _, ok := c.Next(2 * time.Second).(*packet.Suback); !ok {
			t.Fatalf("%s: no SUBACK", who)
		}
	}
	topics := []string{"public/x", "alice/x", "bob/x", "devices/dev1/x", "devices/p-anon/x", "inbox/alice", "inbox/bob", "other/x"}
	pubs := []struct{ user, id string }{{"", "p-anon"}, {"alice", "p-alice"}, {"bob", "p-bob"}, {"admin", "p-admin"}, {"", "dev1-pub"}}
	for _, p := range pubs {
		c := conn(t, addr, packet.V311, p.user, p.id)
		for i, topic := range topics {
			c.Send(&packet.Publish{Topic: topic, QoS: 1, PacketID: uint16(i + 1), Payload: []byte(p.id)})
			if _, ok := c.Next(2 * time.Second).(*packet.Puback); !ok {
				t.Fatalf("%s: no PUBACK", p.id)
			}
		}
	}
	got := map[string][]string{}
	for who, c := range subs {
		got[who] = []string{}
		for _, p := range c.Collect(300 * time.Millisecond) {
			if pub, ok := p.(*packet.Publish); ok {
				got[who] = append(got[who], pub.Topic+"<-"+string(pub.Payload))
				if pub.QoS > 0 {
					c.Send(&packet.Puback{PacketID: pub.PacketID})
				}
			}
		}
		slices.Sort(got[who])
	}
	return got
}
