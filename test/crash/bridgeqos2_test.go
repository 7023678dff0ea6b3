package crash

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	rbroker "github.com/roost-mqtt/roost/broker"
	rclient "github.com/roost-mqtt/roost/client"
	"github.com/roost-mqtt/roost/internal/brokertest"
	"github.com/roost-mqtt/roost/internal/mosquittotest"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	rc "github.com/roost-mqtt/roost/internal/rawclient"
	"github.com/roost-mqtt/roost/packet"
)

// counter counts the messages a subscriber receives, by topic.
type counter struct {
	mu   sync.Mutex
	seen map[string]int
}

func (c *counter) handle(m *rclient.Message) {
	c.mu.Lock()
	c.seen[m.Topic]++
	c.mu.Unlock()
}

// missing returns the first of prefix0..prefix(n-1) not received, or "".
func (c *counter) missing(prefix string, n int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range n {
		if tp := fmt.Sprintf("%s%d", prefix, i); c.seen[tp] == 0 {
			return tp
		}
	}
	return ""
}

// dups returns the topics received more than once, but for the probes:
// a probe is published again every 100 ms until one crosses the bridge,
// each a QoS 2 message of its own on the same topic, so on a slow machine
// (a bridge that takes seconds to come up) several arrive, as they must.
func (c *counter) dups() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for tp, k := range c.seen {
		if k > 1 && !strings.Contains(tp, "/probe") {
			out = append(out, fmt.Sprintf("%s×%d", tp, k))
		}
	}
	return out
}

func (c *counter) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

// peer is a client of url with a persistent session that counts what its
// subscription to filter at QoS 2 brings, across the broker's restarts.
func peer(t *testing.T, ctx context.Context, url, id string, v packet.Version, filter string) (*rclient.Client, *counter) {
	t.Helper()
	cnt := &counter{seen: map[string]int{}}
	c, err := rclient.New(rclient.Options{Servers: []string{url}, ClientID: id, Version: v, KeepSession: true,
		Reconnect: rclient.Backoff{Min: 50 * time.Millisecond, Max: 300 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Disconnect(context.Background()) })
	if filter != "" {
		if _, err := c.Subscribe(ctx, rclient.Subscription{Filter: filter, QoS: 2, Handler: cnt.handle}); err != nil {
			t.Fatal(err)
		}
	}
	return c, cnt
}

// Roost bridges QoS 2 both ways to a remote (mosquitto over 3.1.1, a
// second Roost over 5) while it is killed with SIGKILL three times in the
// middle of the traffic and started again on its data directory: every
// message is delivered exactly once on the other side. The bridge keeps
// its QoS 2 flows in progress in the store's directory (bridge.State), so
// a flow cut at any step completes with the packet identifier it had.
func TestBridgeQoS2ExactlyOnceAcrossKill(t *testing.T) {
	for _, remote := range []string{"mosquitto", "roost"} {
		t.Run(remote, func(t *testing.T) {
			var rURL, proto string
			if remote == "mosquitto" {
				m := mosquittotest.Start(t, "max_queued_messages 100000", "max_inflight_messages 0")
				rURL, proto = "mqtt://"+m.Addr, "3.1.1"
			} else {
				_, addr := brokertest.Start(t, rbroker.Options{MaxQueued: 100000})
				rURL, proto = "mqtt://"+addr, "5"
			}
			bridgeQoS2AcrossKills(t, rURL, proto)
		})
	}
}

func bridgeQoS2AcrossKills(t *testing.T, rURL, proto string) {
	port := mqtttest.FreePort(t)
	local := fmt.Sprintf("mqtt://127.0.0.1:%d", port)
	cfg := filepath.Join(t.TempDir(), "roost.yaml")
	conf := strings.Replace(brokerConfig(), "url: mqtt://127.0.0.1:0", "url: "+local, 1) + fmt.Sprintf(`bridges:
  - name: q2
    addresses: [%s]
    protocol: "%s"
    client_id: q2-bridge
    backoff: {min: 50ms, max: 300ms}
    topics: ['o/# out 2', 'i/# in 2']
`, rURL, proto)
	if err := os.WriteFile(cfg+".tmp", []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(cfg+".tmp", cfg); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(t.TempDir(), "data")
	b := start(t, cfg, data, rc.TCP)
	defer func() { b.stop(t) }()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	_, atRemote := peer(t, ctx, rURL, "rsink", packet.V5, "o/#")
	_, atLocal := peer(t, ctx, local, "lsink", packet.V5, "i/#")
	lpub, _ := peer(t, ctx, local, "lpub", packet.V5, "")
	rpub, _ := peer(t, ctx, rURL, "rpub", packet.V5, "")
	// The bridge is up both ways once a probe crosses each.
	for _, p := range []struct {
		c      *rclient.Client
		topic  string
		at     *counter
		prefix string
	}{{lpub, "o/probe", atRemote, "o/probe"}, {rpub, "i/probe", atLocal, "i/probe"}} {
		deadline := time.Now().Add(30 * time.Second)
		for p.at.missing(p.prefix, 1) != "" {
			if time.Now().After(deadline) {
				t.Fatalf("%s never crossed the bridge\nroost:\n%s", p.topic, b.output())
			}
			if _, err := p.c.Publish(ctx, rclient.Message{Topic: p.topic + "0", QoS: 2}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	const n = 300
	var toks []*rclient.PublishToken
	for i := range n {
		for _, p := range []struct {
			c     *rclient.Client
			topic string
		}{{lpub, "o/"}, {rpub, "i/"}} {
			tok, err := p.c.PublishAsync(rclient.Message{Topic: fmt.Sprintf("%s%d", p.topic, i), QoS: 2})
			if err != nil {
				t.Fatal(err)
			}
			toks = append(toks, tok)
		}
	}
	// Three kills while messages cross, each once the remote has about a
	// quarter more of them.
	for k := 1; k <= 3; k++ {
		deadline := time.Now().Add(60 * time.Second)
		for atRemote.total()+atLocal.total() < k*n/2 {
			if time.Now().After(deadline) {
				t.Fatalf("kill %d: only %d+%d messages crossed\nroost:\n%s", k, atRemote.total(), atLocal.total(), b.output())
			}
			time.Sleep(5 * time.Millisecond)
		}
		b.kill(t)
		b = start(t, cfg, data, rc.TCP)
	}
	for _, tok := range toks {
		if _, err := tok.Wait(ctx); err != nil {
			t.Fatalf("publish: %v\nroost:\n%s", err, b.output())
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		mr, ml := atRemote.missing("o/", n), atLocal.missing("i/", n)
		if mr == "" && ml == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("missing %q at the remote, %q here\nroost:\n%s", mr, ml, b.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Markers behind everything: a duplicate would be in before them.
	for _, p := range []struct {
		c     *rclient.Client
		topic string
		at    *counter
	}{{lpub, "o/marker", atRemote}, {rpub, "i/marker", atLocal}} {
		if _, err := p.c.Publish(ctx, rclient.Message{Topic: p.topic + "0", QoS: 2}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for p.at.missing(p.topic, 1) != "" {
			if time.Now().After(deadline) {
				t.Fatalf("%s did not arrive\nroost:\n%s", p.topic, b.output())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if d := append(atRemote.dups(), atLocal.dups()...); len(d) > 0 {
		t.Fatalf("delivered more than once: %v", d)
	}
	t.Logf("%d messages each way, exactly once across 3 kills", n)
}
