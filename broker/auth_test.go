package broker

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

func TestAuthenticatorRefuses(t *testing.T) {
	t.Parallel()
	auth := AuthenticatorFunc(func(_ context.Context, c *ClientInfo) error {
		switch {
		case c.Username == "car" && string(c.Password) == "secret":
			return nil
		case c.Username == "banned":
			return ErrNotAuthorized
		}
		return ErrBadCredentials
	})
	_, addr := startServer(t, Options{Authenticator: auth})
	cases := []struct {
		v         packet.Version
		user, pwd string
		want      packet.ReasonCode
	}{
		{packet.V311, "car", "secret", 0},
		{packet.V311, "car", "wrong", packet.Connack311BadUsernameOrPassword},
		{packet.V311, "banned", "x", packet.Connack311NotAuthorized},
		{packet.V5, "car", "secret", 0},
		{packet.V5, "car", "wrong", packet.BadUserNameOrPassword},
		{packet.V5, "banned", "x", packet.NotAuthorized},
	}
	for _, tc := range cases {
		c := dial(t, addr, tc.v)
		c.Send(&packet.Connect{ProtocolVersion: tc.v, ClientID: "id", CleanStart: true, UsernameFlag: true,
			Username: tc.user, PasswordFlag: true, Password: []byte(tc.pwd)})
		ack, ok := c.Next(time.Second).(*packet.Connack)
		if !ok || ack.ReasonCode != tc.want {
			t.Errorf("%v %s/%s: CONNACK %+v, want code 0x%02X", tc.v, tc.user, tc.pwd, ack, byte(tc.want))
		}
		if tc.want != 0 {
			c.ExpectClosed(time.Second)
		}
	}
}

// The Authorizer is asked for publish, subscribe and receive (live and
// retained), and for the will when it is published.
func TestAuthorizer(t *testing.T) {
	t.Parallel()
	// Users may only use topics under their own name.
	authz := AuthorizerFunc(func(_ context.Context, c *ClientInfo, act Action, topic string) bool {
		return strings.HasPrefix(topic, c.Username+"/") || topic == "#" && act == ActionSubscribe
	})
	_, addr := startServer(t, Options{Authorizer: authz})
	connect := func(user string, v packet.Version) *packetClient {
		c := dial(t, addr, v)
		c.Connect(&packet.Connect{ClientID: user, CleanStart: true, UsernameFlag: true, Username: user})
		return c
	}
	bob := connect("bob", packet.V5)
	bob.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{
		{Filter: "bob/#", Options: packet.SubOptions{QoS: 1}}, {Filter: "alice/#"}, {Filter: "#"}}})
	ack := bob.Next(time.Second).(*packet.Suback)
	if want := []packet.ReasonCode{1, packet.NotAuthorized, 0}; !equalCodes(ack.ReasonCodes, want) {
		t.Fatalf("SUBACK %v, want %v", ack.ReasonCodes, want)
	}
	alice := connect("alice", packet.V5)
	alice.Send(&packet.Publish{Topic: "bob/inbox", QoS: 1, PacketID: 1, Payload: []byte("hi")})
	if a := alice.Next(time.Second).(*packet.Puback); a.ReasonCode != packet.NotAuthorized {
		t.Errorf("PUBACK 0x%02X for a denied publish, want 0x87", byte(a.ReasonCode))
	}
	alice.Send(&packet.Publish{Topic: "alice/status", QoS: 1, PacketID: 2, Payload: []byte("up"), Retain: true})
	alice.Next(time.Second)
	bob.Send(&packet.Publish{Topic: "bob/own", Payload: []byte("mine")})
	// Bob's "#" matches alice/status but receiving it is denied; his own
	// message arrives.
	for _, p := range bob.Collect(300 * time.Millisecond) {
		if m, ok := p.(*packet.Publish); ok && m.Topic != "bob/own" {
			t.Errorf("bob received %s", m.Topic)
		}
	}
}

type packetClient = mqtttest.Client

func equalCodes(a, b []packet.ReasonCode) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
