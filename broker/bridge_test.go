package broker

import (
	"context"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// A connection from DialInternal is trusted: an Authenticator and an
// Authorizer that refuse everyone are not asked about it, while a network
// client is refused.
func TestDialInternalTrusted(t *testing.T) {
	t.Parallel()
	deny := AuthenticatorFunc(func(context.Context, *ClientInfo) error { return ErrNotAuthorized })
	denyAll := AuthorizerFunc(func(context.Context, *ClientInfo, Action, string) bool { return false })
	s, addr := startServer(t, Options{Authenticator: deny, Authorizer: denyAll})
	out := dial(t, addr, packet.V5)
	out.Send(&packet.Connect{ClientID: "outsider", CleanStart: true})
	if ack, ok := out.Next(5 * time.Second).(*packet.Connack); !ok || ack.ReasonCode != packet.NotAuthorized {
		t.Fatalf("network client: %+v, want CONNACK 0x87", ack)
	}
	nc := s.DialInternal("test")
	c := &mqtttest.Client{T: t, NC: nc, R: packet.NewReader(nc, 0), V: packet.V5}
	t.Cleanup(func() { nc.Close() })
	if ack := c.Connect(&packet.Connect{ClientID: "insider", CleanStart: true}); ack.ReasonCode != packet.Success {
		t.Fatalf("internal client: CONNACK 0x%02X", byte(ack.ReasonCode))
	}
	c.Subscribe("t/#", 1)
	c.Send(&packet.Publish{Topic: "t/1", QoS: 1, PacketID: 7, Payload: []byte("x")})
	var gotAck, gotMsg bool
	for !gotAck || !gotMsg {
		switch p := c.Next(5 * time.Second).(type) {
		case *packet.Puback:
			gotAck = p.PacketID == 7 && p.ReasonCode < 0x80
		case *packet.Publish:
			gotMsg = p.Topic == "t/1"
			if p.QoS == 1 {
				c.Send(&packet.Puback{PacketID: p.PacketID})
			}
		}
	}
	cs, _, ok := s.Client("insider")
	if !ok || cs.Listener != "internal" || cs.RemoteAddr != "internal:test" {
		t.Fatalf("snapshot %+v", cs)
	}
}

// Clients may publish a bridge's connection state under $SYS, and nothing
// else there.
func TestConnectionStateTopic(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]bool{
		"$SYS/broker/connection/edge.cloud/state": true,
		"$SYS/broker/connection//state":           false,
		"$SYS/broker/connection/a/b/state":        false,
		"$SYS/broker/connection/a/status":         false,
		"$SYS/broker/uptime":                      false,
		"broker/connection/a/state":               false,
	} {
		if got := connectionStateTopic(name); got != want {
			t.Errorf("%q: %v, want %v", name, got, want)
		}
	}
	s, addr := startServer(t, Options{})
	c := dial(t, addr, packet.V311)
	c.Connect(&packet.Connect{ClientID: "b", CleanStart: true})
	c.Send(&packet.Publish{Topic: "$SYS/broker/connection/b/state", Payload: []byte("1"), Retain: true, QoS: 1, PacketID: 1})
	c.Send(&packet.Publish{Topic: "$SYS/broker/uptime", Payload: []byte("forever"), Retain: true, QoS: 1, PacketID: 2})
	for range 2 {
		c.Next(5 * time.Second)
	}
	msgs, _ := s.RetainedMessages("$SYS/broker/#", 0)
	if len(msgs) != 1 || msgs[0].Topic != "$SYS/broker/connection/b/state" || string(msgs[0].Payload) != "1" {
		t.Fatalf("retained under $SYS: %v", msgs)
	}
}
