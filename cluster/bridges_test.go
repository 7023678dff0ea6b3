package cluster_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"github.com/roost-mqtt/roost/internal/clustertest"
	"github.com/roost-mqtt/roost/internal/mosquittotest"
)

// Bridges on cluster nodes (docs/bridges.md, "Bridges on a cluster"), with
// a real mosquitto as the remote broker.

// bridgeConfig writes (atomically) a roost.yaml with one bridge, "up", to
// the mosquitto at addr speaking protocol ("5", "3.1.1"): commands come in
// on cmd/#, telemetry goes out on tele/#; and the more bridges of extra
// (YAML list entries).
func bridgeConfig(t *testing.T, addr, protocol, extra string) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "roost.yaml")
	body := fmt.Sprintf(`bridges:
  - name: up
    addresses: ['mqtt://%s']
    keep_alive: 5s
    protocol: %q
    backoff: {min: 200ms, max: 1s}
    topics: ['cmd/# in 1', 'tele/# out 1']
`, addr, protocol) + extra
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// crossUntil publishes a message from pub (topic topic, payload "warm-N",
// QoS 1) once a second until sub has one of them, within d: the bridge's
// subscriptions are made in the background, on both brokers.
func crossUntil(t *testing.T, pub, sub *clustertest.Client, topic string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for n := 0; ; n++ {
		if time.Now().After(deadline) {
			t.Fatalf("nothing published by %s on %s reached %s within %v", pub.ID, topic, sub.ID, d)
		}
		pub.Pub(t, &paho.Publish{Topic: topic, QoS: 1, Payload: fmt.Appendf(nil, "warm-%d", n)})
		select {
		case p := <-sub.In:
			if strings.HasPrefix(string(p.Payload), "warm-") {
				return
			}
		case <-time.After(time.Second):
		}
	}
}

// drain drops what c received so far and keeps dropping warm-ups for a
// moment: they may still be on their way.
func drain(c *clustertest.Client) {
	for {
		select {
		case <-c.In:
		case <-time.After(500 * time.Millisecond):
			return
		}
	}
}

// expectOnce waits until c received each payload of want exactly once
// (warm-ups and probes ignored), failing at a duplicate, a stranger, or
// after d.
func expectOnce(t *testing.T, c *clustertest.Client, want []string, d time.Duration) {
	t.Helper()
	left := map[string]bool{}
	for _, w := range want {
		left[w] = true
	}
	seen := map[string]bool{}
	deadline := time.After(d)
	for len(left) > 0 {
		select {
		case p := <-c.In:
			s := string(p.Payload)
			if strings.HasPrefix(s, "warm-") || s == clustertest.Probe {
				continue
			}
			if seen[s] {
				t.Fatalf("%s got %q twice", c.ID, s)
			}
			if !left[s] {
				t.Fatalf("%s got %q, which is not one of the expected", c.ID, s)
			}
			seen[s] = true
			delete(left, s)
		case <-deadline:
			t.Fatalf("%s: %d of %d messages missing after %v", c.ID, len(left), len(want), d)
		}
	}
}

// The first node of three starts alone (no quorum: the cluster cannot
// record its bridge's local session's owner) with a bridge configured: it
// starts and serves, the bridge waits, and once the other two are up the
// bridge forwards both ways.
func TestClusterBridgeStartsWithoutQuorum(t *testing.T) {
	t.Parallel()
	m := mosquittotest.Start(t)
	// And a lazy bridge (mosquitto's start_type lazy), whose local
	// session must exist to queue what waits for it.
	conf := bridgeConfig(t, m.Addr, "5", fmt.Sprintf(`  - name: later
    addresses: ['mqtt://%s']
    start: lazy
    threshold: 1
    backoff: {min: 200ms, max: 1s}
    topics: ['lazy/# out 1']
`, m.Addr))
	tc := harness.WrapCluster(t, clustertest.Start(t, clustertest.Options{Nodes: 3, NoWait: true,
		Later: func(name string) bool { return name != "n1" },
		NodeArgs: func(name, _ string) []string {
			if name == "n1" {
				return []string{"--config", conf}
			}
			return nil
		}}))
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	tc.WaitLog(n1, "listener ready", 1, clustertest.StartBound)
	tc.WaitLog(n1, "did not accept the bridge's local session yet", 1, clustertest.StartBound)
	tc.WaitLog(n1, "lazy bridge: this broker did not accept its local session yet", 1, clustertest.StartBound)
	select {
	case <-n1.Done():
		t.Fatalf("n1 exited without quorum:\n%s", n1.LogTail(40))
	default:
	}
	if n := harness.CountLog(n1, `msg="connected to remote"`); n != 0 {
		t.Fatalf("the bridge connected to the remote before its local session was accepted (%d)", n)
	}
	tc.Start(n2)
	tc.Start(n3)
	for _, nd := range tc.Nodes {
		nd.WaitReady(t, clustertest.JoinBound)
	}
	tc.WaitLog(n1, "the bridge's local session is accepted now", 1, 60*time.Second)
	tc.WaitLog(n1, `msg="connected to remote"`, 1, 30*time.Second)

	// In: mosquitto -> n1's bridge -> the cluster -> a subscriber on n2.
	sub := harness.Connect(t, n2, "sub-cmd")
	sub.Sub(t, paho.SubscribeOptions{Topic: "cmd/#", QoS: 1})
	rpub := clustertest.Connect(t, m.Addr, "remote-pub")
	crossUntil(t, rpub, sub.Client, "cmd/warm", 30*time.Second)
	drain(sub.Client)
	rpub.Pub(t, &paho.Publish{Topic: "cmd/open", QoS: 1, Payload: []byte("open")})
	expectOnce(t, sub.Client, []string{"open"}, 10*time.Second)

	// Out: a publisher on n3 -> the cluster -> n1's bridge -> mosquitto.
	rsub := clustertest.Connect(t, m.Addr, "remote-sub")
	rsub.Sub(t, paho.SubscribeOptions{Topic: "tele/#", QoS: 1})
	pub := harness.Connect(t, n3, "pub-tele")
	crossUntil(t, pub.Client, rsub, "tele/warm", 30*time.Second)
	drain(rsub)
	pub.Pub(t, &paho.Publish{Topic: "tele/t1", QoS: 1, Payload: []byte("21.5")})
	expectOnce(t, rsub, []string{"21.5"}, 10*time.Second)

	// The lazy bridge made its local session once the cluster could
	// record it; a message waiting there starts it and crosses.
	tc.WaitLog(n1, "lazy bridge: local session made", 1, 60*time.Second)
	lsub := clustertest.Connect(t, m.Addr, "remote-lazy")
	lsub.Sub(t, paho.SubscribeOptions{Topic: "lazy/#", QoS: 1})
	pub.Pub(t, &paho.Publish{Topic: "lazy/x", QoS: 1, Payload: []byte("woke")})
	expectOnce(t, lsub, []string{"woke"}, 30*time.Second)
}

// mosquittoConnects counts the connections mosquitto logged for client
// ids starting with prefix, by id.
func mosquittoConnects(m *mosquittotest.Broker, prefix string) map[string]int {
	re := regexp.MustCompile(`New (?:client|bridge) connected from \S+ as (\S+)`)
	out := map[string]int{}
	for _, l := range re.FindAllStringSubmatch(m.Log.String(), -1) {
		if strings.HasPrefix(l[1], prefix) {
			out[l[1]]++
		}
	}
	return out
}

// Every node of a cluster runs the same bridge configuration (the same
// file everywhere, as docs/cluster.md says): each node's bridge has a
// client id of its own on mosquitto and in the cluster, so none takes
// another over; a message published on the remote reaches each
// subscriber in the cluster once (not once per node's bridge), and one
// published on any node reaches the remote once. With MQTT 5 and with
// 3.1.1 (mosquitto's default for bridges, with its bridge bit: mosquitto
// takes shared subscriptions from a 3.1.1 bridge too).
func TestClusterBridgeOnEveryNode(t *testing.T) {
	t.Parallel()
	for _, protocol := range []string{"5", "3.1.1"} {
		t.Run(protocol, func(t *testing.T) {
			t.Parallel()
			bridgeOnEveryNode(t, protocol)
		})
	}
}

func bridgeOnEveryNode(t *testing.T, protocol string) {
	m := mosquittotest.Start(t)
	conf := bridgeConfig(t, m.Addr, protocol, "")
	tc := harness.StartClusterWith(t, 3, "--config", conf, "--http", "127.0.0.1:0")
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	for _, nd := range tc.Nodes {
		tc.WaitLog(nd, `msg="connected to remote"`, 1, 30*time.Second)
	}
	// mosquitto's log reaches the test through a pipe, after the node's
	// own line at times (n3's connection missing from it at -p 3).
	var ids map[string]int
	harness.Eventually(t, 10*time.Second, func() error {
		ids = mosquittoConnects(m, host+".")
		for _, nd := range tc.Nodes {
			if id := host + "." + nd.Name + ".up"; ids[id] == 0 {
				return fmt.Errorf("mosquitto logged no connection from %s; all: %v", id, ids)
			}
		}
		return nil
	})
	for _, nd := range tc.Nodes {
		if id := host + "." + nd.Name + ".up"; ids[id] != 1 {
			t.Fatalf("mosquitto saw %d connections from %s; all: %v", ids[id], id, ids)
		}
	}

	subs := make([]*harness.Client, len(tc.Nodes))
	for i, nd := range tc.Nodes {
		subs[i] = harness.Connect(t, nd, "sub-"+nd.Name)
		subs[i].Sub(t, paho.SubscribeOptions{Topic: "cmd/#", QoS: 1})
	}
	rpub := clustertest.Connect(t, m.Addr, "remote-pub")
	for _, s := range subs {
		crossUntil(t, rpub, s.Client, "cmd/warm", 30*time.Second)
	}
	for _, s := range subs {
		drain(s.Client)
	}
	// The remote gives each message to one node's bridge (a shared
	// subscription there), in turn: the 12 cross through every node.
	var want []string
	for i := range 12 {
		want = append(want, fmt.Sprintf("cmd-%d", i))
		rpub.Pub(t, &paho.Publish{Topic: fmt.Sprintf("cmd/%d", i), QoS: 1, Payload: []byte(want[i])})
	}
	for _, s := range subs {
		expectOnce(t, s.Client, want, 15*time.Second)
	}

	rsub := clustertest.Connect(t, m.Addr, "remote-sub")
	rsub.Sub(t, paho.SubscribeOptions{Topic: "tele/#", QoS: 1})
	pubs := make([]*harness.Client, len(tc.Nodes))
	for i, nd := range tc.Nodes {
		pubs[i] = harness.Connect(t, nd, "pub-"+nd.Name)
		crossUntil(t, pubs[i].Client, rsub, "tele/warm", 30*time.Second)
	}
	drain(rsub)
	want = want[:0]
	for i, p := range pubs {
		for j := range 4 {
			w := fmt.Sprintf("tele-%d-%d", i, j)
			want = append(want, w)
			p.Pub(t, &paho.Publish{Topic: "tele/" + w, QoS: 1, Payload: []byte(w)})
		}
	}
	expectOnce(t, rsub, want, 15*time.Second)
	// No duplicate on its way, and no takeover loop: over two keep
	// alive intervals of the bridges (5 s), nothing more arrives at the
	// remote subscriber or at those in the cluster, and mosquitto sees no
	// new bridge connection.
	rsub.None(t, 10*time.Second)
	for _, s := range subs {
		noneYet(t, s.Client)
	}
	if now := mosquittoConnects(m, host+"."); fmt.Sprint(now) != fmt.Sprint(ids) {
		t.Fatalf("bridge connections to mosquitto changed: %v, then %v", ids, now)
	}
	for _, nd := range tc.Nodes {
		if n := harness.CountLog(nd, "local session was taken over"); n != 0 {
			t.Errorf("%s: its bridge's local session was taken over %d times", nd.Name, n)
		}
	}
	httpPerNode(t, tc)
}

// httpPerNode checks that each node's HTTP server (admin API, metrics and
// console) is that node's, after TestClusterBridgeOnEveryNode's traffic:
// its bridge forwarded out what its own publisher published, its client
// list has its own clients only, and the admin API refuses a bridge that
// would loop on a cluster node.
func httpPerNode(t *testing.T, tc *harness.Cluster) {
	t.Helper()
	var in uint64
	for _, nd := range tc.Nodes {
		var bridges []struct {
			Name         string `json:"name"`
			Connected    bool   `json:"connected"`
			ForwardedOut uint64 `json:"forwarded_out"`
			ForwardedIn  uint64 `json:"forwarded_in"`
		}
		if err := json.Unmarshal([]byte(get(t, nd, "/api/bridges")), &bridges); err != nil {
			t.Fatal(err)
		}
		if len(bridges) != 1 || !bridges[0].Connected || bridges[0].ForwardedOut < 4 {
			t.Errorf("%s: GET /api/bridges: %+v; want bridge up connected, with its publisher's 4 messages (and warm-ups) forwarded out", nd.Name, bridges)
		} else {
			in += bridges[0].ForwardedIn
		}
		if m := get(t, nd, "/metrics"); metric(m, `roost_bridge_connected{bridge="up"}`) != 1 {
			t.Errorf("%s: /metrics has no connected bridge up", nd.Name)
		}
		var clients struct {
			Clients []struct {
				ClientID string `json:"client_id"`
			} `json:"clients"`
		}
		if err := json.Unmarshal([]byte(get(t, nd, "/api/clients?connected=true")), &clients); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, c := range clients.Clients {
			ids = append(ids, c.ClientID)
		}
		slices.Sort(ids)
		host, _ := os.Hostname()
		if want := []string{"local." + host + "." + nd.Name + ".up", "pub-" + nd.Name, "sub-" + nd.Name}; !slices.Equal(ids, want) {
			t.Errorf("%s: GET /api/clients: %q, want %q", nd.Name, ids, want)
		}
		if page := get(t, nd, "/"); !strings.Contains(page, "<html") {
			t.Errorf("%s: GET / is not the console: %.200s", nd.Name, page)
		}
	}
	// Each remote message came in through one node's bridge.
	if in < 12 {
		t.Errorf("the bridges forwarded in %d messages together, want at least 12", in)
	}
	body := `{"name": "loop", "addresses": ["mqtt://127.0.0.1:1"], "topics": ["x/# both 1"]}`
	res, err := http.Post("http://"+httpAddr(t, tc.Nodes[1])+"/api/bridges", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusBadRequest || !strings.Contains(string(msg), "goes both ways") {
		t.Errorf("POST /api/bridges with a two-way rule on a cluster node: %s %s", res.Status, msg)
	}
}

// noneYet fails t if c has received a message other than a warm-up or a
// probe that it has not read yet.
func noneYet(t *testing.T, c *clustertest.Client) {
	t.Helper()
	for {
		select {
		case p := <-c.In:
			if s := string(p.Payload); !strings.HasPrefix(s, "warm-") && s != clustertest.Probe {
				t.Fatalf("%s: unexpected %q on %q", c.ID, s, p.Topic)
			}
		default:
			return
		}
	}
}
