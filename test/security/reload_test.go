package security

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/auth"
	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// Changing the ACL file changes what an existing connection may do next,
// without reconnecting; a file that does not parse keeps the old rules.
func TestACLReloadLiveConnection(t *testing.T) {
	path := writeFile(t, "acl", "user u\ntopic write a\n")
	acl, err := auth.LoadACLFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reports := make(chan error, 4)
	w := auth.NewWatcher(acl)
	go w.Run(ctx, 10*time.Millisecond, nil, func(_ string, err error) { reports <- err })
	addr := start(t, broker.Options{Authorizer: acl})
	c := conn(t, addr, packet.V5, "u", "c")
	id := uint16(0)
	publish := func(topic string) packet.ReasonCode {
		t.Helper()
		id++
		c.Send(&packet.Publish{Topic: topic, QoS: 1, PacketID: id, Payload: []byte("x")})
		return c.Next(time.Second).(*packet.Puback).ReasonCode
	}
	if publish("a") >= 0x80 || publish("b") != packet.NotAuthorized {
		t.Fatal("initial rules not applied")
	}
	rewrite := func(content string) error {
		t.Helper()
		later := time.Now().Add(time.Duration(id) * time.Second) // a new mtime even within one clock tick
		mqtttest.WriteFile(t, path, []byte(content), later)      // atomic: the watcher polls
		select {
		case err := <-reports:
			return err
		case <-time.After(5 * time.Second):
			t.Fatal("file change not noticed")
			return nil
		}
	}
	if err := rewrite("user u\ntopic write b\n"); err != nil {
		t.Fatal(err)
	}
	if publish("b") >= 0x80 || publish("a") != packet.NotAuthorized {
		t.Error("new rules not applied to the existing connection")
	}
	if err := rewrite("user u\ntopic wrote a\n"); err == nil {
		t.Fatal("a bad file reloaded without error")
	}
	if publish("b") >= 0x80 || publish("a") != packet.NotAuthorized {
		t.Error("a bad file changed the rules")
	}
}

// namedListener makes its connections report a listener name, as the
// listener package's do (broker.ListenerNamer).
type namedListener struct {
	net.Listener
	name string
}

type namedConn struct {
	net.Conn
	name string
}

func (c namedConn) ListenerName() string { return c.name }

func (l namedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return namedConn{c, l.name}, nil
}

// Anonymous access is decided per listener.
func TestAnonymousPerListener(t *testing.T) {
	a := &auth.Authenticator{AllowAnonymous: false, Listeners: map[string]bool{"local": true}}
	s, err := broker.New(broker.Options{Authenticator: a, SysInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	addrs := map[string]string{}
	for _, name := range []string{"local", "public"} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go s.Serve(namedListener{ln, name})
		addrs[name] = ln.Addr().String()
	}
	for name, want := range map[string]packet.ReasonCode{"local": 0, "public": packet.NotAuthorized} {
		c := mqtttest.Dial(t, addrs[name], packet.V5)
		c.Send(&packet.Connect{ProtocolVersion: packet.V5, ClientID: "anon", CleanStart: true})
		if ack := c.Next(time.Second).(*packet.Connack); ack.ReasonCode != want {
			t.Errorf("anonymous on %s: CONNACK 0x%02X, want 0x%02X", name, byte(ack.ReasonCode), byte(want))
		}
	}
}
