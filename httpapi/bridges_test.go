package httpapi

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/bridge"
	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/client"
	"github.com/roost-mqtt/roost/internal/brokertest"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// A bridge from the env's broker to a second Roost forwards one message;
// /metrics and GET /api/bridges show it connected with one forwarded out.
func TestBridgeMetricsAndAPI(t *testing.T) {
	var br *bridge.Bridge
	e := newEnv(t, Options{Bridges: func() []bridge.Stats {
		if br == nil {
			return nil
		}
		return []bridge.Stats{br.Stats()}
	}})
	_, remoteAddr := brokertest.Start(t, broker.Options{})
	var err error
	br, err = bridge.New(e.srv, bridge.Config{Name: "up", Addresses: []string{"mqtt://" + remoteAddr},
		Backoff: client.Backoff{Min: 20 * time.Millisecond, Max: 100 * time.Millisecond},
		Topics:  []bridge.Rule{{Pattern: "m/#", Direction: bridge.Out, QoS: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := br.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer br.Close(ctx)
	pub := e.client("pub", packet.V5)
	pub.Send(&packet.Publish{Topic: "m/1", QoS: 1, PacketID: 1})
	if _, ok := pub.Next(5 * time.Second).(*packet.Puback); !ok {
		t.Fatal("no PUBACK")
	}
	mqtttest.Eventually(t, 15*time.Second, func() bool { return br.Stats().ForwardedOut == 1 })

	mfs := e.scrape()
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"roost_bridge_connected", []string{"bridge", "up"}, 1},
		{"roost_bridge_forwarded_total", []string{"bridge", "up", "direction", "out"}, 1},
		{"roost_bridge_forwarded_total", []string{"bridge", "up", "direction", "in"}, 0},
		{"roost_bridge_dropped_total", []string{"bridge", "up"}, 0},
		{"roost_bridge_queued", []string{"bridge", "up"}, 0},
	} {
		if got := value(mfs, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	var list []bridgeJSON
	e.getJSON("/api/bridges", &list)
	if len(list) != 1 || list[0].Name != "up" || !list[0].Connected || list[0].ForwardedOut != 1 ||
		list[0].Server != "mqtt://"+remoteAddr {
		t.Fatalf("/api/bridges: %+v", list)
	}
	// Without bridges the API answers an empty list, not null.
	e2 := newEnv(t, Options{})
	if code, body := e2.do("GET", "/api/bridges", ""); code != 200 || body != "[]\n" && body != "[]" {
		t.Fatalf("no bridges: %d %q", code, body)
	}
	// Without a BridgeAdmin nothing can be changed, and says so.
	for _, c := range []struct {
		method, path, body string
		code               int
	}{
		{"POST", "/api/bridges", `{"name": "x"}`, 501},
		{"PUT", "/api/bridges/x", `{"name": "x"}`, 501},
		{"DELETE", "/api/bridges/x", "", 404},
		{"GET", "/api/bridges/x", "", 404},
	} {
		if code, body := e2.do(c.method, c.path, c.body); code != c.code || !strings.Contains(body, "error") {
			t.Errorf("%s %s: %d %s, want %d", c.method, c.path, code, body, c.code)
		}
	}
}
