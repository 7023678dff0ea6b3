package cluster_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

var httpReady = regexp.MustCompile(`msg="http ready" addr=(\S+)`)

// httpAddr returns nd's --http address from its log.
func httpAddr(t *testing.T, nd *harness.Node) string {
	t.Helper()
	b, _ := os.ReadFile(nd.LogPath)
	m := httpReady.FindSubmatch(b)
	if m == nil {
		t.Fatalf("%s logged no http ready line", nd.Name)
	}
	return string(m[1])
}

// get returns the body of GET path on nd's HTTP server.
func get(t *testing.T, nd *harness.Node, path string) string {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	res, err := c.Get("http://" + httpAddr(t, nd) + path)
	if err != nil {
		t.Fatalf("%s GET %s: %v", nd.Name, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("%s GET %s: %s %v\n%s", nd.Name, path, res.Status, err, b)
	}
	return string(b)
}

// metric returns the value of the sample series (a metric name and its
// labels as Prometheus writes them, e.g. `roost_x{qos="1"}`) in a scrape,
// or -1 when it is absent.
func metric(scrape, series string) float64 {
	for _, l := range strings.Split(scrape, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// atLeast checks scrape's series against min.
func atLeast(scrape, series string, min float64) error {
	if v := metric(scrape, series); v < min {
		return fmt.Errorf("%s = %v, want at least %v", series, v, min)
	}
	return nil
}

// TestClusterFigures: after traffic between nodes, each node's /metrics,
// GET /api/cluster and $SYS/broker/cluster/ tell the nodes, the engine's
// health, the forwards (sent on the publisher's node, received on the
// subscriber's, by QoS; round trips; a timed-out one to a paused node),
// the claims and takeovers, interest entries and the retained stream.
func TestClusterFigures(t *testing.T) {
	t.Parallel() // see harness_test.go
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Config: "sys_interval: 1s\ncluster:\n  forward_timeout: 1s\n", Args: []string{"--http", "127.0.0.1:0"}})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]

	sub := harness.Connect(t, n2, "fig-sub")
	sub.Sub(t, paho.SubscribeOptions{Topic: "fig/#", QoS: 2})
	pub := harness.Connect(t, n1, "fig-pub")
	pub.AwaitInterest(t, "fig/x")
	counts := [3]int{3, 5, 2}
	for qos, n := range counts {
		for i := range n {
			if rc := pub.Pub(t, &paho.Publish{Topic: "fig/x", QoS: byte(qos), Payload: fmt.Appendf(nil, "%d-%d", qos, i)}); rc != 0 {
				t.Fatalf("QoS %d publish: 0x%02X", qos, rc)
			}
		}
	}
	pub.Pub(t, &paho.Publish{Topic: "fig/kept", QoS: 1, Retain: true, Payload: []byte("k")})
	for range counts[0] + counts[1] + counts[2] + 1 {
		sub.Next(t, harness.Wait)
	}
	// A takeover: fig-move connects to n1, then to n3.
	harness.Connect(t, n1, "fig-move")
	harness.Connect(t, n3, "fig-move")

	harness.Eventually(t, 10*time.Second, func() error {
		m1, m2 := get(t, n1, "/metrics"), get(t, n2, "/metrics")
		for _, c := range []struct {
			scrape, series string
			min            float64
		}{
			{m1, `roost_cluster_nodes{state="configured"}`, 3},
			{m1, `roost_cluster_nodes{state="reachable"}`, 3},
			{m1, `roost_cluster_nodes{state="routed"}`, 2},
			{m1, `roost_cluster_peer_reachable{peer="n2"}`, 1},
			{m1, `roost_cluster_peer_reachable{peer="n3"}`, 1},
			{m1, `roost_cluster_interest_entries{node="n2"}`, 1},
			{m1, `roost_cluster_forwards_sent_total{qos="0"}`, float64(counts[0])},
			{m1, `roost_cluster_forwards_sent_total{qos="1"}`, float64(counts[1])},
			{m1, `roost_cluster_forwards_sent_total{qos="2"}`, float64(counts[2])},
			{m1, `roost_cluster_forward_latency_seconds_count`, float64(counts[1] + counts[2])},
			{m1, `roost_cluster_ownership_claims_total{result="ok"}`, 2},
			{m1, `roost_cluster_ownership_taken_over_total`, 1},
			{m1, `roost_cluster_ready{part="ownership"}`, 1},
			{m1, `roost_cluster_ready{part="retained"}`, 1},
			{m1, `roost_cluster_retained_stream_messages`, 1},
			{m1, `roost_cluster_jetstream_current`, 1},
			{m1, `roost_cluster_jetstream_meta_size`, 3},
			{m2, `roost_cluster_interest_entries{node="n2"}`, 1},
			{m2, `roost_cluster_forwards_received_total{qos="0"}`, float64(counts[0])},
			{m2, `roost_cluster_forwards_received_total{qos="1"}`, float64(counts[1])},
			{m2, `roost_cluster_forwards_received_total{qos="2"}`, float64(counts[2])},
		} {
			if err := atLeast(c.scrape, c.series, c.min); err != nil {
				return err
			}
		}
		if !regexp.MustCompile(`(?m)^roost_cluster_jetstream_meta_leader\{leader="n[123]"\} 1$`).MatchString(m1) {
			return fmt.Errorf("no meta leader in n1's scrape")
		}
		if v := metric(m1, `roost_cluster_forwards_failed_total{qos="1"}`); v != 0 {
			return fmt.Errorf("n1: %v failed QoS 1 forwards, want 0", v)
		}
		return nil
	})

	var api struct {
		Node  string `json:"node"`
		Nodes []struct {
			Name            string `json:"name"`
			InterestEntries int    `json:"interest_entries"`
		} `json:"nodes"`
		Forwards     [3]struct{ Sent, Received uint64 } `json:"forwards"`
		LatencyCount uint64                             `json:"forward_latency_count"`
	}
	if err := json.Unmarshal([]byte(get(t, n1, "/api/cluster")), &api); err != nil {
		t.Fatal(err)
	}
	if api.Node != "n1" || len(api.Nodes) != 2 || api.Nodes[0].Name != "n2" || api.Nodes[0].InterestEntries < 1 ||
		api.Forwards[1].Sent < uint64(counts[1]) || api.LatencyCount < uint64(counts[1]+counts[2]) {
		t.Errorf("GET /api/cluster on n1: %+v", api)
	}

	// The same figures under $SYS on n2.
	harness.Eventually(t, 10*time.Second, func() error {
		got := sysCluster(t, n2)
		for k, min := range map[string]int{"forwards/qos1/received": counts[1], "forwards/qos2/received": counts[2],
			"interest/entries": 1, "retained/stream_messages": 1, "nodes/known": 3} {
			if v, err := strconv.Atoi(got[k]); err != nil || v < min {
				return fmt.Errorf("$SYS/broker/cluster/%s = %q, want at least %d", k, got[k], min)
			}
		}
		if got["jetstream/meta_leader"] == "" {
			return fmt.Errorf("$SYS/broker/cluster/jetstream/meta_leader empty")
		}
		return nil
	})

	// The admin API's deletion of a retained message (the console's
	// Topics page) clears it on every node.
	req, _ := http.NewRequest(http.MethodDelete, "http://"+httpAddr(t, n1)+"/api/retained?topic=fig/kept", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("DELETE /api/retained on n1: %v %v", res, err)
	}
	res.Body.Close()
	harness.Eventually(t, 10*time.Second, func() error {
		if got := retainedOn(t, n3, "fig-ret-n3", "fig/kept", 300*time.Millisecond); len(got) > 0 {
			return fmt.Errorf("n3 still has %q after the admin deletion on n1", got)
		}
		return nil
	})

	// A forward to a paused node times out (forward_timeout 1s) and
	// counts so.
	tc.Kill(n2, syscall.SIGSTOP)
	if _, closed := pub.TryPublish(t, &paho.Publish{Topic: "fig/x", QoS: 1, Payload: []byte("lost")}); !closed {
		t.Fatal("a QoS 1 publish to a paused node's subscriber was acknowledged")
	}
	harness.Eventually(t, 10*time.Second, func() error {
		return atLeast(get(t, n1, "/metrics"), `roost_cluster_forwards_timed_out_total{qos="1"}`, 1)
	})
	tc.Kill(n2, syscall.SIGCONT)
}

// sysCluster returns what nd publishes under $SYS/broker/cluster/, as
// collected for half a second by a new subscriber.
func sysCluster(t *testing.T, nd *harness.Node) map[string]string {
	t.Helper()
	c := harness.Connect(t, nd, "sys-fig")
	defer c.Disconnect(&paho.Disconnect{})
	c.Sub(t, paho.SubscribeOptions{Topic: "$SYS/broker/cluster/#", QoS: 0})
	got := map[string]string{}
	deadline := time.After(500 * time.Millisecond)
	for {
		select {
		case p := <-c.In:
			got[strings.TrimPrefix(p.Topic, "$SYS/broker/cluster/")] = string(p.Payload)
		case <-deadline:
			return got
		}
	}
}
