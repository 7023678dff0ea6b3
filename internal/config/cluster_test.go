package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/cluster"
)

func TestParseCluster(t *testing.T) {
	tests := []struct {
		yaml string
		want cluster.Config
		err  string
	}{
		{"", cluster.Config{}, ""},
		{"cluster:\n  name: prod\n  node: n1\n  listen: 10.0.0.11:7222\n  peers: [10.0.0.12:7222, 10.0.0.13:7222]\n  replicas: 5\n  data: /var/lib/roost/cluster\n  sync_interval: always\n  forward_timeout: 2s\n",
			cluster.Config{Name: "prod", Node: "n1", Listen: "10.0.0.11:7222", Peers: []string{"10.0.0.12:7222", "10.0.0.13:7222"},
				Replicas: 5, Data: "/var/lib/roost/cluster", ForwardTimeout: 2 * time.Second}, ""},
		{"cluster: {sync_interval: 100ms, replicas: 1, unsafe: true}", cluster.Config{SyncInterval: 100 * time.Millisecond, Replicas: 1, Unsafe: true}, ""},
		{"cluster: {listen: nowhere}", cluster.Config{}, `roost.yaml:1: cluster.listen: want HOST:PORT`},
		{"cluster: {peers: [a:1, b]}", cluster.Config{}, `roost.yaml:1: cluster.peers[1]: want HOST:PORT`},
		{"cluster: {replicas: 7}", cluster.Config{}, `roost.yaml:1: cluster.replicas:`},
		{"cluster: {sync_interval: often}", cluster.Config{}, `roost.yaml:1: cluster.sync_interval: must be a duration`},
		{"cluster: {nodes: 3}", cluster.Config{}, `unknown key "nodes" in cluster`},
		{"cluster:\n  tls: {cert: /etc/roost/n1.pem, key: /etc/roost/n1.key, ca: /etc/roost/ca.pem}\n  secret_file: /etc/roost/secret\n",
			cluster.Config{TLS: cluster.TLS{Cert: "/etc/roost/n1.pem", Key: "/etc/roost/n1.key", CA: "/etc/roost/ca.pem"}, SecretFile: "/etc/roost/secret"}, ""},
		{"cluster: {tls: {certificate: x}}", cluster.Config{}, `unknown key "certificate" in cluster.tls`},
		{"cluster: {retained_tombstone_ttl: 10m}", cluster.Config{TombstoneTTL: 10 * time.Minute}, ""},
		{"cluster: {replace_after: 1m}", cluster.Config{ReplaceAfter: time.Minute}, ""},
		{"cluster: {replace_after: 500ms}", cluster.Config{}, `cluster.replace_after: must be`},
		{"cluster: {retained_tombstone_ttl: 10ms}", cluster.Config{}, `cluster.retained_tombstone_ttl: must be`},
	}
	for _, tt := range tests {
		c, err := Parse("roost.yaml", []byte(tt.yaml))
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: error %v, want %q", tt.yaml, err, tt.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(c.Cluster, tt.want) {
			t.Errorf("%q: %+v, %v; want %+v", tt.yaml, c.Cluster, err, tt.want)
		}
	}
}

func TestClusterCheck(t *testing.T) {
	ok := cluster.Config{Node: "n1", Listen: "127.0.0.2:7222", Peers: []string{"127.0.0.3:7222"}, Data: "d"}
	c := ok
	if err := c.Check(); err != nil || c.Replicas != 3 || c.Name != "roost" || c.ReplaceAfter != cluster.DefaultReplaceAfter {
		t.Fatalf("Check: %v, replicas %d, name %q, replace_after %v", err, c.Replicas, c.Name, c.ReplaceAfter)
	}
	for _, tt := range []struct {
		change func(*cluster.Config)
		unsafe bool
	}{
		{func(c *cluster.Config) { c.Replicas = 1 }, true},
		{func(c *cluster.Config) { c.SyncInterval = time.Second }, true},
		{func(c *cluster.Config) { c.Listen = "0.0.0.0:7222" }, false},
		{func(c *cluster.Config) { c.Listen = "127.0.0.2:0" }, false},
		{func(c *cluster.Config) { c.Node = "a.b" }, false},
		{func(c *cluster.Config) { c.Data = "" }, false},
		{func(c *cluster.Config) { c.ReplaceAfter = 500 * time.Millisecond }, false},
		{func(c *cluster.Config) { c.Peers = []string{c.Listen} }, false},
		// A port other hosts can reach needs TLS and a secret.
		{func(c *cluster.Config) { c.Listen = "10.0.0.11:7222" }, true},
		{func(c *cluster.Config) { c.Listen, c.SecretFile = "10.0.0.11:7222", "s" }, true},
		{func(c *cluster.Config) { c.Listen, c.TLS = "10.0.0.11:7222", cluster.TLS{Cert: "c", Key: "k", CA: "a"} }, true},
		{func(c *cluster.Config) { c.TLS = cluster.TLS{Cert: "c", Key: "k"} }, false},
	} {
		c := ok
		tt.change(&c)
		err := c.Check()
		if err == nil || errors.Is(err, cluster.ErrUnsafe) != tt.unsafe {
			t.Errorf("%+v: Check = %v, want an error (unsafe: %v)", c, err, tt.unsafe)
			continue
		}
		if tt.unsafe {
			c.Unsafe = true
			if err := c.Check(); err != nil {
				t.Errorf("%+v with unsafe: %v", c, err)
			}
		}
	}
}

func TestClusterDataDefault(t *testing.T) {
	c := Default()
	if got := c.ClusterData(); got != filepath.Join("data", "cluster") {
		t.Errorf("ClusterData = %q", got)
	}
}

// TestClusterSecureListen: a reachable cluster port with TLS and a secret
// needs no unsafe; the files' relative names are beside the config file.
func TestClusterSecureListen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "roost.yaml")
	yaml := "cluster:\n  node: n1\n  listen: 10.0.0.11:7222\n  data: /d\n  tls: {cert: n1.pem, key: n1.key, ca: ca.pem}\n  secret_file: secret\n"
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	want := cluster.TLS{Cert: filepath.Join(dir, "n1.pem"), Key: filepath.Join(dir, "n1.key"), CA: filepath.Join(dir, "ca.pem")}
	if c.Cluster.TLS != want || c.Cluster.SecretFile != filepath.Join(dir, "secret") {
		t.Errorf("tls %+v, secret_file %q: want beside the config file", c.Cluster.TLS, c.Cluster.SecretFile)
	}
	if err := c.Cluster.Check(); err != nil {
		t.Errorf("Check: %v", err)
	}
}
