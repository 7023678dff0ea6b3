package cluster

import (
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/roost-mqtt/roost/broker"
)

// Figures of one node: counters kept with atomics on the forward path,
// everything else read when asked (Stats), at scrape or $SYS intervals.

// forwardLatencyBounds are the upper bounds of the forward round-trip
// histogram (a QoS 1/2 forward sent to its node's answer): loopback and a
// LAN are well under a millisecond; the top buckets are a node in trouble.
var forwardLatencyBounds = [...]time.Duration{
	100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond, 10 * time.Millisecond,
	25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond,
	500 * time.Millisecond, time.Second, 2500 * time.Millisecond, 5 * time.Second,
}

// counters are a node's running counts. Forwards are counted per target
// node, by QoS.
type counters struct {
	sent, received, failed, timedOut [3]atomic.Uint64
	latency                          [len(forwardLatencyBounds) + 1]atomic.Uint64
	latencySum                       atomic.Int64 // nanoseconds
	claims, claimsFailed, takenOver  atomic.Uint64
	// heldDropped: messages held for sessions moving here that were not
	// delivered (handover_live.go).
	heldDropped atomic.Uint64
}

func (c *counters) noteLatency(d time.Duration) {
	i := 0
	for i < len(forwardLatencyBounds) && d > forwardLatencyBounds[i] {
		i++
	}
	c.latency[i].Add(1)
	c.latencySum.Add(int64(d))
}

// Stats is one node's view of the cluster.
type Stats struct {
	Name string `json:"name"`
	Node string `json:"node"`
	// Configured is how many nodes the configuration names: this one
	// and its peers.
	Configured int `json:"configured"`
	// Nodes are the other nodes this node hears from (heartbeats), by
	// name.
	Nodes []NodeStats `json:"nodes"`
	// Routed are the nodes the engine has a route to.
	Routed    []string       `json:"routed"`
	JetStream JetStreamStats `json:"jetstream"`
	Ownership OwnershipStats `json:"ownership"`
	Retained  RetainedStats  `json:"retained"`
	Moves     MoveStats      `json:"moves"`
	// InterestEntries is how many (filter, share group) entries this
	// node announces; each NodeStats has the other nodes'.
	InterestEntries int `json:"interest_entries"`
	// Forwards count messages forwarded to other nodes (one per target
	// node) and from them, by QoS 0, 1, 2.
	Forwards [3]ForwardStats `json:"forwards"`
	// ForwardLatency is the QoS 1/2 round trip: a forward sent to its
	// node's confirmation.
	ForwardLatency broker.Histogram `json:"-"`
}

// NodeStats is what a node knows of another.
type NodeStats struct {
	Name string `json:"name"`
	// Synced: its interest is current here (no snapshot pending).
	Synced bool `json:"synced"`
	// LastHeard is how long ago its last heartbeat or change came.
	LastHeard       time.Duration `json:"last_heard_ns"`
	InterestEntries int           `json:"interest_entries"`
}

// JetStreamStats is the engine's replicated store as this node sees it.
type JetStreamStats struct {
	// Current: this node's JetStream is in step with its meta group.
	Current bool `json:"current"`
	// MetaLeader is the node leading the meta group ("" during an
	// election or without a quorum).
	MetaLeader string `json:"meta_leader"`
	// MetaSize is the meta group's known size.
	MetaSize int `json:"meta_size"`
}

// OwnershipStats are the client-id owner records' figures.
type OwnershipStats struct {
	Ready bool `json:"ready"`
	// Claims are CONNECTs whose ownership was recorded; ClaimsFailed
	// those closed without a CONNACK for want of it.
	Claims       uint64 `json:"claims"`
	ClaimsFailed uint64 `json:"claims_failed"`
	// TakenOver counts requests of other nodes to let go of a client id
	// (takeovers of this node's clients by a connect elsewhere).
	TakenOver uint64 `json:"taken_over"`
}

// MoveStats are the figures of persistent sessions moving here from
// another live node.
type MoveStats struct {
	// HeldDropped counts messages held for a moving session that it did
	// not get: those past the hold's bound (65,536 per move; their
	// publishers got no confirmation), and those whose Message Expiry
	// ran out while held [MQTT-3.3.2-5]. Each is also logged.
	HeldDropped uint64 `json:"held_dropped"`
}

// RetainedStats are the retained stream's figures, from this node's
// replica.
type RetainedStats struct {
	Ready    bool   `json:"ready"`
	CaughtUp bool   `json:"caught_up"`
	Messages uint64 `json:"stream_messages"`
	Bytes    uint64 `json:"stream_bytes"`
}

// ForwardStats count forwarded messages of one QoS.
type ForwardStats struct {
	Sent     uint64 `json:"sent"`
	Received uint64 `json:"received"`
	// Failed: not sent, or refused or unreadable by the receiving node.
	Failed uint64 `json:"failed"`
	// TimedOut: not confirmed within forward_timeout.
	TimedOut uint64 `json:"timed_out"`
}

// Stats returns this node's figures. It asks the local engine (no network
// round trip), so it is cheap enough for every scrape.
func (n *Node) Stats() Stats {
	c := &n.counters
	st := Stats{Name: n.cfg.Name, Node: n.cfg.Node, Configured: len(n.cfg.Peers) + 1,
		InterestEntries: n.local.size()}
	now := time.Now()
	for _, p := range n.remote.status() {
		st.Nodes = append(st.Nodes, NodeStats{Name: p.name, Synced: p.synced, LastHeard: now.Sub(p.lastSeen), InterestEntries: p.entries})
	}
	if routed, err := n.eng.routedNodes(); err == nil {
		for name := range routed {
			st.Routed = append(st.Routed, name)
		}
		slices.Sort(st.Routed)
	}
	st.JetStream.Current = n.eng.srv.JetStreamIsCurrent()
	st.Ownership = OwnershipStats{Ready: n.own.bucket() != nil, Claims: c.claims.Load(), ClaimsFailed: c.claimsFailed.Load(),
		TakenOver: c.takenOver.Load()}
	st.Retained.Ready, st.Retained.CaughtUp = n.ret.ready.Load(), n.ret.caught.Load()
	st.Moves.HeldDropped = c.heldDropped.Load()
	if js, err := n.eng.srv.Jsz(&server.JSzOptions{Accounts: true, Streams: true}); err == nil {
		if js.Meta != nil {
			st.JetStream.MetaLeader, st.JetStream.MetaSize = js.Meta.Leader, js.Meta.Size
		}
		for _, a := range js.AccountDetails {
			for _, s := range a.Streams {
				if s.Name == retStream {
					st.Retained.Messages, st.Retained.Bytes = s.State.Msgs, s.State.Bytes
				}
			}
		}
	}
	for q := range 3 {
		st.Forwards[q] = ForwardStats{Sent: c.sent[q].Load(), Received: c.received[q].Load(),
			Failed: c.failed[q].Load(), TimedOut: c.timedOut[q].Load()}
	}
	st.ForwardLatency = broker.Histogram{Bounds: forwardLatencyBounds[:], Counts: make([]uint64, len(c.latency)),
		Sum: time.Duration(c.latencySum.Load())}
	for i := range c.latency {
		st.ForwardLatency.Counts[i] = c.latency[i].Load()
	}
	return st
}

// SysFigures implements broker.ClusterFigures: this node's view of the
// cluster, published under $SYS/broker/cluster/.
func (n *Node) SysFigures() [][2]string {
	st := n.Stats()
	names := make([]string, len(st.Nodes))
	for i, p := range st.Nodes {
		names[i] = p.Name
	}
	js := "not current"
	if st.JetStream.Current {
		js = "current"
	}
	u := func(v uint64) string { return strconv.FormatUint(v, 10) }
	figs := [][2]string{
		{"name", st.Name},
		{"node", st.Node},
		{"nodes/reachable", strings.Join(names, " ")},
		{"nodes/count", strconv.Itoa(len(st.Nodes) + 1)},
		{"nodes/known", strconv.Itoa(st.Configured)},
		{"routes/nodes", strconv.Itoa(len(st.Routed))},
		{"jetstream", js},
		{"jetstream/meta_leader", st.JetStream.MetaLeader},
		{"ownership", ready(st.Ownership.Ready)},
		{"ownership/claims", u(st.Ownership.Claims)},
		{"ownership/claims_failed", u(st.Ownership.ClaimsFailed)},
		{"ownership/taken_over", u(st.Ownership.TakenOver)},
		{"retained", ready(st.Retained.Ready)},
		{"retained/stream_messages", u(st.Retained.Messages)},
		{"retained/stream_bytes", u(st.Retained.Bytes)},
		{"interest/entries", strconv.Itoa(st.InterestEntries)},
		{"moves/held_dropped", u(st.Moves.HeldDropped)},
	}
	for q, f := range st.Forwards {
		p := "forwards/qos" + strconv.Itoa(q) + "/"
		figs = append(figs, [2]string{p + "sent", u(f.Sent)}, [2]string{p + "received", u(f.Received)},
			[2]string{p + "failed", u(f.Failed)}, [2]string{p + "timed_out", u(f.TimedOut)})
	}
	var count uint64
	for _, c := range st.ForwardLatency.Counts {
		count += c
	}
	figs = append(figs, [2]string{"forwards/latency/count", u(count)},
		[2]string{"forwards/latency/sum_seconds", strconv.FormatFloat(st.ForwardLatency.Sum.Seconds(), 'f', 6, 64)})
	return figs
}

func ready(ok bool) string {
	if ok {
		return "ready"
	}
	return "not ready"
}
