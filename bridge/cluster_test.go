package bridge

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/client"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// On a cluster node the default client ids include the node's name, and
// ids that are set stay as given.
func TestClusterClientIDs(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	rules := []Rule{{Pattern: "a/#", Direction: Out}}
	for _, tc := range []struct {
		name          string
		cfg           Config
		remote, local string
		localSub      string
	}{
		{name: "single node", cfg: Config{Name: "up"},
			remote: host + ".up", local: "local." + host + ".up", localSub: "a/#"},
		{name: "cluster node", cfg: Config{Name: "up", Node: "n2", Cluster: "c1"},
			remote: host + ".n2.up", local: "local." + host + ".n2.up", localSub: "$share/bridge.up/a/#"},
		{name: "explicit ids on a cluster node", cfg: Config{Name: "up", Node: "n2", ClientID: "edge", LocalClientID: "mine"},
			remote: "edge", local: "mine", localSub: "$share/bridge.up/a/#"},
		{name: "unshared on a cluster node", cfg: Config{Name: "up", Node: "n2", Unshared: true},
			remote: host + ".n2.up", local: "local." + host + ".n2.up", localSub: "a/#"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.cfg
			c.Addresses, c.Topics = []string{"mqtt://127.0.0.1:1"}, rules
			if err := c.fill(); err != nil {
				t.Fatal(err)
			}
			if c.ClientID != tc.remote || c.LocalClientID != tc.local {
				t.Errorf("client ids %q and %q, want %q and %q", c.ClientID, c.LocalClientID, tc.remote, tc.local)
			}
			if got := c.localSubFilter(rules[0]); got != tc.localSub {
				t.Errorf("local subscription %q, want %q", got, tc.localSub)
			}
		})
	}
}

// The in rules' remote subscriptions are shared on a cluster node, in a
// group of the cluster's and the bridge's names, with characters a group
// name cannot hold replaced [MQTT-4.8.2-2].
func TestClusterRemoteGroup(t *testing.T) {
	r := Rule{Pattern: "cmd/#", Direction: In, RemotePrefix: "site/"}
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Name: "up"}, "site/cmd/#"},
		{Config{Name: "up", Node: "n1", Cluster: "eu"}, "$share/eu.up/site/cmd/#"},
		{Config{Name: "up", Node: "n1"}, "$share/roost.up/site/cmd/#"},
		{Config{Name: "a/b+c#", Node: "n1", Cluster: "eu"}, "$share/eu.a_b_c_/site/cmd/#"},
		{Config{Name: "up", Node: "n1", Cluster: "eu", Unshared: true}, "site/cmd/#"},
	} {
		if got := tc.cfg.remoteSubFilter(r); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.cfg, got, tc.want)
		}
	}
}

// Rules along which a message would go round between the nodes and the
// remote are refused on a cluster node, and only there (not with
// Unshared, which subscribes as one node does).
func TestClusterRulesRefused(t *testing.T) {
	in := func(p, lp, rp string) Rule { return Rule{Pattern: p, Direction: In, LocalPrefix: lp, RemotePrefix: rp} }
	out := func(p, lp, rp string) Rule {
		return Rule{Pattern: p, Direction: Out, LocalPrefix: lp, RemotePrefix: rp}
	}
	for _, tc := range []struct {
		name  string
		rules []Rule
		want  string // in the error; "" for none
	}{
		{"both ways", []Rule{{Pattern: "#", Direction: Both}}, "goes both ways"},
		{"in and out apart", []Rule{in("cmd/#", "", ""), out("tele/#", "", "")}, ""},
		{"in and out meet", []Rule{in("cmd/#", "", ""), out("+/x", "", "")}, "meet"},
		{"same pattern, prefixes apart on both sides", []Rule{in("x/#", "from/", "down/"), out("x/#", "to/", "up/")}, ""},
		{"prefixes apart here only", []Rule{in("x/#", "from/", "same/"), out("x/#", "to/", "same/")}, "meet"},
		{"prefixes apart there only", []Rule{in("x/#", "same/", "down/"), out("x/#", "same/", "up/")}, "meet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Config{Name: "up", Addresses: []string{"mqtt://127.0.0.1:1"}, Topics: tc.rules, Node: "n1"}
			err := c.fill()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error saying %q", err, tc.want)
			}
			single := Config{Name: "up", Addresses: []string{"mqtt://127.0.0.1:1"}, Topics: tc.rules}
			if err := single.fill(); err != nil {
				t.Fatalf("refused on a single node: %v", err)
			}
			unshared := Config{Name: "up", Addresses: []string{"mqtt://127.0.0.1:1"}, Topics: tc.rules, Node: "n1", Unshared: true}
			if err := unshared.fill(); err != nil {
				t.Fatalf("refused on a cluster node with Unshared: %v", err)
			}
		})
	}
}

func TestFiltersMeet(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"a/b", "a/b", true},
		{"a/b", "a/c", false},
		{"a/+", "a/c", true},
		{"+/c", "a/+", true},
		{"a/#", "a", true}, // '#' also matches the parent level
		{"a", "a/#", true},
		{"a/#", "b/#", false},
		{"#", "x/y/z", true},
		{"a/b/c", "a/b", false},
		{"a/+", "a/b/c", false},
		{"a/+/#", "a/b/c/d", true},
		{"a//b", "a/+/b", true},
		{"a/+", "a", false},
	} {
		if got := filtersMeet(tc.a, tc.b); got != tc.want {
			t.Errorf("filtersMeet(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
		if got := filtersMeet(tc.b, tc.a); got != tc.want {
			t.Errorf("filtersMeet(%q, %q) = %v, want %v", tc.b, tc.a, got, tc.want)
		}
	}
}

// A bridge says so when another connection takes its session over, on
// the remote (MQTT 5 says 0x8E) or here: on a cluster, the sign of two
// nodes running it with one client id set explicitly.
func TestTakeoverLogged(t *testing.T) {
	local, localURL := startRoost(t)
	_, remoteURL := startRoost(t)
	var logs mqtttest.LogBuffer
	b := startBridge(t, local, Config{Name: "up", Addresses: []string{remoteURL}, ClientID: "edge", LocalClientID: "edge-local",
		Topics: []Rule{{Pattern: "a/#", Direction: Out}}, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	connected := func() error {
		if !b.Connected() {
			return errors.New("bridge not connected")
		}
		return nil
	}
	eventually(t, 10*time.Second, connected)
	for _, c := range []struct{ url, id, log string }{
		{remoteURL, "edge", "the remote took the bridge's connection over"},
		{localURL, "edge-local", "the bridge's local session was taken over"},
	} {
		// The intruder does not reconnect once the bridge takes the id
		// back, so the two do not go on taking turns.
		newClient(t, c.url, packet.V5, func(o *client.Options) { o.ClientID, o.Reconnect.Disabled = c.id, true })
		eventually(t, 10*time.Second, func() error {
			if !strings.Contains(logs.String(), c.log) {
				return fmt.Errorf("no %q in the log:\n%s", c.log, logs.String())
			}
			return nil
		})
	}
	eventually(t, 10*time.Second, connected)
}
