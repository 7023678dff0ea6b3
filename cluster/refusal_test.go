package cluster_test

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"github.com/roost-mqtt/roost/internal/clustertest"
)

// expectUnclaimed checks that nd closes cp's connection without a CONNACK,
// as a node does while it cannot record the client id's owner (an
// election, no quorum, catching up: conn.closeUnclaimed in the broker),
// within bound.
func expectUnclaimed(t *testing.T, nd *harness.Node, cp *paho.Connect, bound time.Duration) {
	t.Helper()
	start := time.Now()
	c, ack, err := clustertest.Dial(t, nd.MQTT, cp)
	if err == nil {
		c.Disconnect(&paho.Disconnect{})
		t.Fatalf("CONNECT %s on %s: CONNACK 0x%02X, want the connection closed without one", cp.ClientID, nd.Name, ack.ReasonCode)
	}
	if d := time.Since(start); d > bound {
		t.Errorf("CONNECT %s on %s: closed after %v, want within %v", cp.ClientID, nd.Name, d, bound)
	}
}

// TestClusterJSReconnectsWithoutQuorum: an mqtt.js client with its default
// reconnect settings (no reconnectOnConnackError) whose node dies while
// the cluster has no quorum keeps trying the other servers, and is back
// with its session once a quorum is. A node that cannot record a client
// id's owner closes the CONNECT without a CONNACK: with 0x88 Server
// unavailable, as before, mqtt.js stopped reconnecting for good
// (handlers/connack.js), and this client stayed offline.
func TestClusterJSReconnectsWithoutQuorum(t *testing.T) {
	t.Parallel() // see harness_test.go
	// A node's wait for the owner record (forward_timeout) shorter than
	// mqtt.js's connectTimeout here (4 s, client.js), so that the client
	// gets the node's answer, not its own timeout.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Config: "cluster:\n  forward_timeout: 1s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	expiry := uint32(600)
	host := func(nd *harness.Node) map[string]any {
		h, p, _ := net.SplitHostPort(nd.MQTT)
		port, _ := strconv.Atoi(p)
		return map[string]any{"host": h, "port": port}
	}
	// On n3, then n1 (n2 goes down with n3), in turn.
	js := startJSWith(t, "js-noquorum", map[string]any{"url": "mqtt://" + n3.MQTT, "protocolVersion": 5,
		"clean": false, "properties": map[string]any{"sessionExpiryInterval": expiry},
		"reconnectPeriod": 500, "servers": []any{host(n3), host(n1)}},
		map[string]int{"nq/t": 1})
	// A refusing CONNACK is reported as an error "Connection refused:
	// ..." (a dead n3's refused dials are errors too, and harmless).
	refused := func(ev jsEvent) bool {
		return ev.Event == "error" && strings.Contains(ev.Message, "Connection refused:")
	}
	pub := harness.Connect(t, n1, "nq-pub")
	pub.AwaitInterest(t, "nq/t")

	tc.Kill(n2, syscall.SIGKILL)
	tc.Kill(n3, syscall.SIGKILL)
	// The client's reconnects to n1 are closed without a CONNACK while
	// there is no quorum (it has a client id to record).
	tc.WaitLog(n1, `msg="closing CONNECT without CONNACK`, 2, 60*time.Second)
	for len(js.events) > 0 {
		if ev := <-js.events; refused(ev) {
			t.Fatalf("mqtt.js %s while the cluster has no quorum: %s", js.id, ev)
		}
	}
	tc.Start(n2)
	back := make(chan jsEvent, 1)
	deadline := time.After(60 * time.Second)
	for len(back) == 0 {
		select {
		case ev := <-js.events:
			switch ev.Event {
			case "connect":
				back <- ev
			case "error":
				if refused(ev) {
					t.Fatalf("mqtt.js %s: %s; want it to keep reconnecting", js.id, ev)
				}
			}
		case <-deadline:
			t.Fatal("mqtt.js not connected again within 60 s of the quorum's return")
		}
	}
	if ev := <-back; !ev.SessionPresent {
		t.Errorf("mqtt.js back without its session: %s", ev)
	}
	// Nothing lost: its subscription is there, and a QoS 1 message
	// published now reaches it.
	harness.Eventually(t, 30*time.Second, func() error {
		rc, closed := pub.TryPublish(t, &paho.Publish{Topic: "nq/t", QoS: 1, Payload: []byte("after")})
		if closed {
			harness.Redial(t, n1, "nq-pub", &pub)
			return errors.New("publish not confirmed: connection closed")
		}
		if rc != 0 {
			return fmt.Errorf("PUBACK 0x%02X", rc)
		}
		return nil
	})
	if got := js.sink.take(t, 1, 10*time.Second); got[0] != (received{"nq/t", "after", 1, false}) {
		t.Errorf("mqtt.js got %+v, want nq/t after at QoS 1", got[0])
	}
}
