package httpapi

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/roost-mqtt/roost/cluster"
)

// Cluster figures (Options.Cluster): each node reports its own view, so a
// Prometheus server scrapes every node and compares.

func cdesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("roost_cluster_"+name, help, labels, nil)
}

var (
	descClusterNodes     = cdesc("nodes", "Nodes by state: configured (this node and its peers), reachable (this node and the nodes it hears from), routed (the nodes the engine has a route to).", "state")
	descClusterPeer      = cdesc("peer_reachable", "1 for each other node this node hears from (heartbeats).", "peer")
	descClusterInterest  = cdesc("interest_entries", "(filter, share group) entries of each node's subscriptions, as this node knows them.", "node")
	descClusterSent      = cdesc("forwards_sent_total", "Messages forwarded to other nodes, one per target node, by QoS.", "qos")
	descClusterReceived  = cdesc("forwards_received_total", "Messages other nodes forwarded here, by QoS.", "qos")
	descClusterFailed    = cdesc("forwards_failed_total", "Forwards not sent, or refused or unreadable at the receiving node, by QoS.", "qos")
	descClusterTimedOut  = cdesc("forwards_timed_out_total", "QoS 1/2 forwards not confirmed within forward_timeout, by QoS.", "qos")
	descClusterLatency   = cdesc("forward_latency_seconds", "QoS 1/2 forward round trip: sent to the receiving node's confirmation.")
	descClusterClaims    = cdesc("ownership_claims_total", "Client-id ownership claims of CONNECTs here, by result (failed: closed without CONNACK, the client tries again).", "result")
	descClusterTakenOver = cdesc("ownership_taken_over_total", "Requests of other nodes to let go of a client id connected or kept here.")
	descClusterReady     = cdesc("ready", "1 once this node can record client-id owners (ownership) / follows the retained stream (retained).", "part")
	descClusterRetMsgs   = cdesc("retained_stream_messages", "Messages in this node's replica of the retained stream (one per topic, cleared topics included).")
	descClusterRetBytes  = cdesc("retained_stream_bytes", "Bytes of this node's replica of the retained stream.")
	descClusterJSCurrent = cdesc("jetstream_current", "1 while this node's JetStream is in step with its meta group.")
	descClusterJSLeader  = cdesc("jetstream_meta_leader", "1, labelled with the node leading JetStream's meta group (absent without a leader).", "leader")
	descClusterJSSize    = cdesc("jetstream_meta_size", "Known size of JetStream's meta group.")
	descClusterHeldDrop  = cdesc("move_held_dropped_total", "Messages held for persistent sessions moving here that they did not get: past the hold's bound (not confirmed to their publishers) or expired while held.")
)

// clusterCollector exports Options.Cluster at scrape time.
type clusterCollector struct{ stats func() cluster.Stats }

func (c clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descClusterNodes, descClusterPeer, descClusterInterest, descClusterSent, descClusterReceived,
		descClusterFailed, descClusterTimedOut, descClusterLatency, descClusterClaims, descClusterTakenOver, descClusterReady,
		descClusterRetMsgs, descClusterRetBytes, descClusterJSCurrent, descClusterJSLeader, descClusterJSSize, descClusterHeldDrop} {
		ch <- d
	}
}

func (c clusterCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.stats()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(descClusterNodes, float64(st.Configured), "configured")
	gauge(descClusterNodes, float64(len(st.Nodes)+1), "reachable")
	gauge(descClusterNodes, float64(len(st.Routed)), "routed")
	gauge(descClusterInterest, float64(st.InterestEntries), st.Node)
	for _, p := range st.Nodes {
		gauge(descClusterPeer, 1, p.Name)
		gauge(descClusterInterest, float64(p.InterestEntries), p.Name)
	}
	for q, f := range st.Forwards {
		qos := strconv.Itoa(q)
		counter(descClusterSent, f.Sent, qos)
		counter(descClusterReceived, f.Received, qos)
		counter(descClusterFailed, f.Failed, qos)
		if q > 0 {
			counter(descClusterTimedOut, f.TimedOut, qos)
		}
	}
	ch <- latencyHistogram(descClusterLatency, st.ForwardLatency)
	counter(descClusterClaims, st.Ownership.Claims, "ok")
	counter(descClusterClaims, st.Ownership.ClaimsFailed, "failed")
	counter(descClusterTakenOver, st.Ownership.TakenOver)
	gauge(descClusterReady, b2f(st.Ownership.Ready), "ownership")
	gauge(descClusterReady, b2f(st.Retained.Ready), "retained")
	gauge(descClusterRetMsgs, float64(st.Retained.Messages))
	gauge(descClusterRetBytes, float64(st.Retained.Bytes))
	gauge(descClusterJSCurrent, b2f(st.JetStream.Current))
	if st.JetStream.MetaLeader != "" {
		gauge(descClusterJSLeader, 1, st.JetStream.MetaLeader)
	}
	gauge(descClusterJSSize, float64(st.JetStream.MetaSize))
	counter(descClusterHeldDrop, st.Moves.HeldDropped)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// clusterJSON is GET /api/cluster: cluster.Stats and the latency in
// seconds.
type clusterJSON struct {
	cluster.Stats
	ForwardLatencyCount      uint64  `json:"forward_latency_count"`
	ForwardLatencySumSeconds float64 `json:"forward_latency_sum_seconds"`
}

// getCluster answers GET /api/cluster: this node's view of the cluster, or
// 404 when the broker runs alone.
func (h *Handler) getCluster(w http.ResponseWriter, _ *http.Request) {
	if h.opts.Cluster == nil {
		writeError(w, http.StatusNotFound, "not a cluster node")
		return
	}
	st := h.opts.Cluster()
	if st.Nodes == nil {
		st.Nodes = []cluster.NodeStats{}
	}
	if st.Routed == nil {
		st.Routed = []string{}
	}
	out := clusterJSON{Stats: st, ForwardLatencySumSeconds: st.ForwardLatency.Sum.Seconds()}
	for _, n := range st.ForwardLatency.Counts {
		out.ForwardLatencyCount += n
	}
	writeJSON(w, http.StatusOK, out)
}
