package httpapi

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/cluster"
)

// A broker that runs alone has no cluster figures: GET /api/cluster is 404
// and /metrics has no roost_cluster_ series.
func TestClusterFiguresAlone(t *testing.T) {
	e := newEnv(t, Options{})
	if code, body := e.do("GET", "/api/cluster", ""); code != http.StatusNotFound || !strings.Contains(body, "not a cluster node") {
		t.Errorf("GET /api/cluster: %d %s", code, body)
	}
	for _, mf := range e.scrape() {
		if strings.HasPrefix(mf.GetName(), "roost_cluster_") {
			t.Errorf("single node scrape has %s", mf.GetName())
		}
	}
}

// The cluster figures a node reports become metrics (the multi-process
// TestClusterFigures in package cluster checks them after real traffic).
func TestClusterMetrics(t *testing.T) {
	st := cluster.Stats{Name: "roost", Node: "n1", Configured: 3, InterestEntries: 4,
		Nodes:     []cluster.NodeStats{{Name: "n2", Synced: true, InterestEntries: 7}},
		Routed:    []string{"n2"},
		JetStream: cluster.JetStreamStats{Current: true, MetaLeader: "n2", MetaSize: 3},
		Ownership: cluster.OwnershipStats{Ready: true, Claims: 5, ClaimsFailed: 1, TakenOver: 2},
		Retained:  cluster.RetainedStats{Ready: true, Messages: 9, Bytes: 900},
		Moves:     cluster.MoveStats{HeldDropped: 6},
		Forwards:  [3]cluster.ForwardStats{{Sent: 1}, {Sent: 10, Received: 3, Failed: 2, TimedOut: 1}, {}},
		ForwardLatency: broker.Histogram{Bounds: []time.Duration{time.Millisecond}, Counts: []uint64{8, 2},
			Sum: 20 * time.Millisecond}}
	e := newEnv(t, Options{Cluster: func() cluster.Stats { return st }})
	mfs := e.scrape()
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"roost_cluster_nodes", []string{"state", "configured"}, 3},
		{"roost_cluster_nodes", []string{"state", "reachable"}, 2},
		{"roost_cluster_nodes", []string{"state", "routed"}, 1},
		{"roost_cluster_peer_reachable", []string{"peer", "n2"}, 1},
		{"roost_cluster_interest_entries", []string{"node", "n1"}, 4},
		{"roost_cluster_interest_entries", []string{"node", "n2"}, 7},
		{"roost_cluster_forwards_sent_total", []string{"qos", "1"}, 10},
		{"roost_cluster_forwards_received_total", []string{"qos", "1"}, 3},
		{"roost_cluster_forwards_failed_total", []string{"qos", "1"}, 2},
		{"roost_cluster_forwards_timed_out_total", []string{"qos", "1"}, 1},
		{"roost_cluster_ownership_claims_total", []string{"result", "failed"}, 1},
		{"roost_cluster_ownership_taken_over_total", nil, 2},
		{"roost_cluster_retained_stream_messages", nil, 9},
		{"roost_cluster_jetstream_meta_leader", []string{"leader", "n2"}, 1},
		{"roost_cluster_jetstream_current", nil, 1},
		{"roost_cluster_move_held_dropped_total", nil, 6},
	} {
		if got := value(mfs, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	var h struct {
		Node                     string  `json:"node"`
		LatencyCount             uint64  `json:"forward_latency_count"`
		ForwardLatencySumSeconds float64 `json:"forward_latency_sum_seconds"`
	}
	e.getJSON("/api/cluster", &h)
	if h.Node != "n1" || h.LatencyCount != 10 || h.ForwardLatencySumSeconds != 0.02 {
		t.Errorf("GET /api/cluster: %+v", h)
	}
}
