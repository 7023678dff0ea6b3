package bridgeset

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/brokertest"
	"github.com/roost-mqtt/roost/internal/config"
	"github.com/roost-mqtt/roost/internal/eventually"
	"github.com/roost-mqtt/roost/internal/mqtttest"
)

// On a cluster node (cluster.node set) the set gives its bridges the
// node's name: the default local client id includes it, the out rules
// subscribe with the cluster's shared subscription, an explicit client
// id is kept with a warning (another node with the same file would take
// it over), and a rule that would loop between the nodes and the remote
// is refused. The broker here is a single one: what is checked is what
// the set asks of it.
func TestClusterNodeBridges(t *testing.T) {
	local, _ := brokertest.Start(t, broker.Options{})
	_, remote := brokertest.Start(t, broker.Options{})
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	bridges := func(extra string) []config.Bridge {
		var out []config.Bridge
		for i, body := range []string{
			fmt.Sprintf(`{"name": "auto", "addresses": ["mqtt://%s"], "topics": ["x/# out 1"]}`, remote),
			fmt.Sprintf(`{"name": "fixed", "addresses": ["mqtt://%s"], "client_id": "edge", "topics": ["y/# out 1"]}`, remote),
			extra,
		} {
			if body == "" {
				continue
			}
			b, err := config.ParseBridge(fmt.Sprintf("bridge %d", i), []byte(body))
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, b)
		}
		return out
	}
	cfg := config.Default()
	cfg.Store.Memory = true
	cfg.Cluster.Node = "n1"
	cfg.Bridges = bridges("")
	var logs mqtttest.LogBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := Start(ctx, cfg, local, slog.New(slog.NewTextHandler(&logs, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background()) // again: a no-op
	id := "local." + host + ".n1.auto"
	eventually.NoError(t, 10*time.Second, func() error {
		_, subs, ok := local.Client(id)
		if !ok || !slices.ContainsFunc(subs, func(s broker.SubscriptionSnapshot) bool { return s.Filter == "$share/bridge.auto/x/#" }) {
			return fmt.Errorf("no session %s subscribed to $share/bridge.auto/x/#: %v %v", id, ok, subs)
		}
		if _, _, ok := local.Client("local.edge"); !ok {
			return fmt.Errorf("no session local.edge for the bridge with client_id edge")
		}
		return nil
	})
	l := logs.String()
	if !strings.Contains(l, "bridge client id set explicitly on a cluster node") || !strings.Contains(l, "bridge=fixed") {
		t.Errorf("no warning about bridge fixed's client id:\n%s", l)
	}
	for _, line := range strings.Split(l, "\n") {
		if strings.Contains(line, "set explicitly") && strings.Contains(line, "bridge=auto") {
			t.Errorf("a warning about bridge auto, whose ids are the defaults: %s", line)
		}
	}

	s.Close(ctx)
	cfg.Bridges = bridges(fmt.Sprintf(`{"name": "loop", "addresses": ["mqtt://%s"], "topics": ["z/# both 1"]}`, remote))
	if _, err := Start(ctx, cfg, local, slog.New(slog.DiscardHandler), nil); err == nil || !strings.Contains(err.Error(), "goes both ways") {
		t.Errorf("a two-way rule on a cluster node: %v", err)
	}
}
