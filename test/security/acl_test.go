package security

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/auth"
	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/packet"
)

const matrixACL = `topic read public/#

user alice
topic readwrite alice/#
topic read public/#
topic deny public/secret

user bob
topic write public/#

pattern readwrite clients/%c/#
pattern read inbox/%u/#
pattern write inbox/+/from/%u
`

// TestACLMatrix: users x topics x actions through a real broker, for
// MQTT 3.1.1 and 5.
func TestACLMatrix(t *testing.T) {
	for _, v := range []packet.Version{packet.V311, packet.V5} {
		t.Run(fmt.Sprint(v), func(t *testing.T) { aclMatrix(t, v) })
	}
}

func aclMatrix(t *testing.T, v packet.Version) {
	acl, err := auth.ParseACL("acl", []byte(matrixACL))
	if err != nil {
		t.Fatal(err)
	}
	addr := start(t, broker.Options{Authorizer: acl})
	subDenied := packet.ReasonCode(0x80) // 3.1.1 SUBACK failure
	if v == packet.V5 {
		subDenied = packet.NotAuthorized // 0x87
	}
	// SUBSCRIBE: granted when some topic under the filter is readable,
	// refused when none is or a deny rule covers the filter.
	for _, tc := range []struct {
		user, id, filter string
		ok               bool
	}{
		{"", "anon", "public/#", true},
		{"", "anon", "alice/#", false},
		{"alice", "a1", "alice/+", true},
		{"alice", "a1", "public/secret", false},
		{"alice", "a1", "#", true},
		{"bob", "b1", "public/#", false}, // write only
		{"bob", "b1", "clients/b1/#", true},
		{"bob", "b1", "clients/a1/#", false},
		{"bob", "b1", "inbox/bob/#", true},
		{"bob", "b1", "inbox/alice/#", false},
		{"alice", "a1", "$share/g/alice/x", true},
	} {
		c := conn(t, addr, v, tc.user, tc.id)
		c.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: tc.filter, Options: packet.SubOptions{QoS: 1}}}})
		ack := c.Next(time.Second).(*packet.Suback)
		if want := map[bool]packet.ReasonCode{true: 1, false: subDenied}[tc.ok]; ack.ReasonCodes[0] != want {
			t.Errorf("%q (%s) SUBSCRIBE %s: 0x%02X, want 0x%02X", tc.user, tc.id, tc.filter, byte(ack.ReasonCodes[0]), byte(want))
		}
	}

	// PUBLISH and delivery: a watcher with "#" through the broker sees
	// only what publishers may write and it may read.
	alice := conn(t, addr, v, "alice", "a1")
	alice.Subscribe("#", 0)
	anon := conn(t, addr, v, "", "anon")
	anon.Subscribe("public/#", 0)
	bobIn := conn(t, addr, v, "bob", "b1")
	bobIn.Subscribe("inbox/bob/#", 0)
	for _, tc := range []struct {
		user, id, topic string
		ok              bool
	}{
		{"bob", "b2", "public/news", true},
		{"bob", "b2", "public/secret", true}, // bob may write it; alice may not read it
		{"bob", "b2", "alice/x", false},
		{"alice", "a2", "alice/x", true},
		{"alice", "a2", "public/news", false}, // read only for alice
		{"", "anon2", "public/news", false},
		{"", "c9", "clients/c9/state", true},
		{"", "c9", "clients/c8/state", false},
		{"alice", "a2", "inbox/bob/from/alice", true},
		{"alice", "a2", "inbox/bob/from/carol", false},
	} {
		c := conn(t, addr, v, tc.user, tc.id)
		c.Send(&packet.Publish{Topic: tc.topic, QoS: 1, PacketID: 7, Payload: []byte(tc.user)})
		ack := c.Next(time.Second).(*packet.Puback)
		if v == packet.V5 && (ack.ReasonCode < 0x80) != tc.ok {
			t.Errorf("%q publish %s: PUBACK 0x%02X, want ok=%v", tc.user, tc.topic, byte(ack.ReasonCode), tc.ok)
		}
	}
	check := func(name string, c interface {
		Collect(time.Duration) []packet.Packet
	}, want []string) {
		t.Helper()
		got := publishes(c.Collect(300 * time.Millisecond))
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s received %q, want %q", name, got, want)
		}
	}
	check("alice", alice, []string{"alice/x", "public/news"}) // not public/secret
	check("anonymous", anon, []string{"public/news", "public/secret"})
	check("bob", bobIn, []string{"inbox/bob/from/alice"})
}

// Retained messages go through the receive check when a subscription
// delivers them.
func TestACLRetained(t *testing.T) {
	acl, err := auth.ParseACL("acl", []byte("user pub\ntopic write #\nuser r\ntopic read shared/#\ntopic deny shared/hidden\n"))
	if err != nil {
		t.Fatal(err)
	}
	addr := start(t, broker.Options{Authorizer: acl})
	p := conn(t, addr, packet.V5, "pub", "p")
	for _, topic := range []string{"shared/a", "shared/hidden", "other/b"} {
		p.Send(&packet.Publish{Topic: topic, QoS: 1, PacketID: 1, Retain: true, Payload: []byte("r")})
		p.Next(time.Second)
	}
	r := conn(t, addr, packet.V5, "r", "r")
	r.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "#"}}})
	got := publishes(r.Collect(300 * time.Millisecond))
	if !slices.Equal(got, []string{"shared/a"}) {
		t.Errorf("retained delivered %q, want only shared/a", got)
	}
}

// A will is published only to a topic its client may write.
func TestACLWill(t *testing.T) {
	acl, err := auth.ParseACL("acl", []byte("pattern write wills/%c\npattern read #\n"))
	if err != nil {
		t.Fatal(err)
	}
	addr := start(t, broker.Options{Authorizer: acl})
	w := conn(t, addr, packet.V311, "", "watcher")
	w.Subscribe("wills/+", 0)
	for _, tc := range []struct{ id, topic string }{{"d1", "wills/d1"}, {"d2", "wills/d1"}} {
		c := mqttDialWill(t, addr, tc.id, tc.topic)
		c.NC.Close() // abnormal close: the will is due
	}
	got := publishes(w.Collect(500 * time.Millisecond))
	if !slices.Equal(got, []string{"wills/d1"}) {
		t.Errorf("wills delivered %q, want one on wills/d1 (from d1 only)", got)
	}
}
