package main

import (
	"context"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/client"
	"github.com/roost-mqtt/roost/packet"
)

// Bad -D arguments fail before connecting, with mosquitto's exit status
// and the gist of its message; flags Roost cannot honour fail with the
// reason.
func TestPropertyErrors(t *testing.T) {
	t.Parallel()
	port := startBroker(t)
	base := []string{"-h", "127.0.0.1", "-p", port, "-t", "x", "-m", "y"}
	tests := []struct {
		args  []string
		want  string // in roost's stderr
		mosq  string // in mosquitto_pub's stderr; "" when it has no such check
		mcode int
	}{
		{[]string{"-D", "publish", "session-expiry-interval", "5"}, "not allowed for publish", "not allowed for publish", 1},
		{[]string{"-D", "connect", "maximum-qos", "1"}, "not allowed for connect", "not allowed for connect", 1},
		{[]string{"-D", "foo", "bar", "baz"}, "Invalid command", "Invalid command", 1},
		{[]string{"-D", "publish", "bogus-prop", "1"}, "Invalid property name", "Invalid property name", 1},
		{[]string{"-D", "publish", "user-property", "a"}, "not enough arguments", "not enough arguments", 1},
		{[]string{"-D", "publish", "subscription-identifier", "3"}, "not allowed for publish", "not supported for publish", 1},
		{[]string{"-D", "auth", "authentication-method", "x"}, "not supported", "not supported for auth", 1},
		{[]string{"-D", "puback", "reason-string", "x"}, "not supported", "not supported for puback", 1},
		{[]string{"-D", "connect", "authentication-method", "x"}, "enhanced authentication (AUTH) is not supported", "", 0},
		{[]string{"-D", "publish", "message-expiry-interval", "soon"}, `"soon" is not a number`, "", 0},
		{[]string{"-D", "connect", "receive-maximum", "0"}, "0 is a protocol error", "", 0},
		{[]string{"-D", "disconnect", "session-expiry-interval", "60"}, "MQTT-3.14.2-2", "", 0},
		{[]string{"-V", "311", "-D", "publish", "content-type", "x"}, "properties need MQTT 5", "", 0},
		{[]string{"--psk", "0011", "--psk-identity", "me"}, "TLS-PSK is not supported", "", 0},
		{[]string{"--unix", "/run/mosquitto.sock"}, "unix domain sockets are not supported", "", 0},
		{[]string{"--proxy", "http://127.0.0.1:1"}, "Unsupported proxy protocol", "Unsupported proxy protocol", 1},
	}
	for _, tt := range tests {
		args := append(append([]string{}, base...), tt.args...)
		code, _, stderr := runRoost(t, append([]string{"pub"}, args...)...)
		if code != 1 || !strings.Contains(stderr, tt.want) {
			t.Errorf("roost pub %q: exit %d, stderr %q; want 1 and %q", tt.args, code, stderr, tt.want)
		}
		if tt.mosq == "" {
			continue
		}
		mcode, _, mstderr := runTool(t, "mosquitto_pub", append([]string{"-V", "mqttv5"}, args...)...)
		if mcode != tt.mcode || !strings.Contains(mstderr, tt.mosq) {
			t.Errorf("mosquitto_pub %q: exit %d, stderr %q; the test expects %d and %q", tt.args, mcode, mstderr, tt.mcode, tt.mosq)
		}
	}
}

// -U removes a subscription a persistent session kept: the same steps
// with roost sub and with mosquitto_sub leave the same subscriptions.
// -D connect/disconnect session-expiry-interval keep and then end the
// session.
func TestUnsubscribeAndSessionProperties(t *testing.T) {
	t.Parallel()
	srv, port := startBrokerServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// run returns once the broker is done with the tool's connection: a
	// tool may exit with its UNSUBSCRIBE or DISCONNECT still unread by the
	// broker, which the next client's publishes must not overtake (they
	// did, under CPU load, with mosquitto_sub).
	run := func(tool string, args ...string) {
		t.Helper()
		args = append([]string{"-h", "127.0.0.1", "-p", port}, args...)
		var code int
		var stderr string
		if tool == "roost" {
			code, _, stderr = runRoost(t, append([]string{"sub"}, args...)...)
		} else {
			code, _, stderr = runTool(t, "mosquitto_sub", append([]string{"-V", "mqttv5"}, args...)...)
		}
		if code != 0 {
			t.Fatalf("%s sub %q: exit %d: %s", tool, args, code, stderr)
		}
		if !eventually(t, 10*time.Second, func() bool { return srv.Stats().Connected == 0 }) {
			t.Fatalf("%s sub %q: the broker still has %d connections", tool, args, srv.Stats().Connected)
		}
	}
	// delivered returns the topics a session with id receives of one
	// message on each of a, b and c published while it is offline.
	delivered := func(id string) []string {
		t.Helper()
		pub, err := client.New(client.Options{Servers: []string{"mqtt://127.0.0.1:" + port}})
		if err != nil {
			t.Fatal(err)
		}
		if err := pub.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		for _, tp := range []string{"u/a", "u/b", "u/c"} {
			pub.Publish(ctx, client.Message{Topic: tp, QoS: 1})
		}
		pub.Disconnect(ctx)
		var mu sync.Mutex
		var got []string
		present := false
		c, err := client.New(client.Options{Servers: []string{"mqtt://127.0.0.1:" + port}, ClientID: id, KeepSession: true,
			OnConnectionUp: func(_ *client.Client, ca *packet.Connack) { present = ca.SessionPresent },
			DefaultHandler: func(m *client.Message) { mu.Lock(); got = append(got, m.Topic); mu.Unlock() }})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		// The stored messages come right after CONNACK, before anything
		// published after SUBACK: once that has been handled, so have they.
		synced := make(chan struct{})
		c.Subscribe(ctx, client.Subscription{Filter: "u/sync", QoS: 1, Handler: func(*client.Message) { close(synced) }})
		c.Publish(ctx, client.Message{Topic: "u/sync", QoS: 1})
		select {
		case <-synced:
		case <-ctx.Done():
			t.Fatal("u/sync not received")
		}
		c.Disconnect(ctx)
		<-c.Done()
		mu.Lock()
		defer mu.Unlock()
		sort.Strings(got)
		if !present {
			got = append(got, "(no session)")
		}
		return got
	}
	for _, tool := range []string{"roost", "mosquitto"} {
		id := "u-" + tool
		run(tool, "-i", id, "-c", "-q", "1", "-t", "u/a", "-t", "u/b", "-E")
		run(tool, "-i", id, "-c", "-q", "1", "-t", "u/c", "-U", "u/a", "-E",
			"-D", "unsubscribe", "user-property", "why", "test")
		if got := strings.Join(delivered(id), " "); got != "u/b u/c" {
			t.Errorf("%s: after -U u/a the session got %q, want u/b u/c", tool, got)
		}
		// Session Expiry 0 at DISCONNECT ends the session.
		run(tool, "-i", id, "-q", "1", "-t", "u/c", "-E", "-D", "connect", "session-expiry-interval", "3600",
			"-D", "disconnect", "session-expiry-interval", "0")
		if got := strings.Join(delivered(id), " "); got != "(no session)" {
			t.Errorf("%s: after -D disconnect session-expiry-interval 0 the session got %q, want none", tool, got)
		}
	}
}
