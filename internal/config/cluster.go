package config

import (
	"net"
	"path/filepath"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/roost-mqtt/roost/cluster"
)

// The cluster: section configures this node of a cluster (cluster.Config;
// docs/cluster.md). Without it, or with it empty, Roost runs alone.
func (d *decoder) cluster(n *yaml.Node, path string, c *cluster.Config) {
	d.mapping(n, path, map[string]field{
		"name":   d.str(&c.Name),
		"node":   d.str(&c.Node),
		"listen": d.hostPort(&c.Listen),
		"peers": func(p string, v *yaml.Node) {
			d.list(v, p, func(p string, v *yaml.Node) {
				var s string
				d.hostPort(&s)(p, v)
				if s != "" {
					c.Peers = append(c.Peers, s)
				}
			})
		},
		"replicas": func(p string, v *yaml.Node) {
			if r, ok := d.integer(v, p, 1, 5); ok {
				c.Replicas = int(r)
			}
		},
		"data": d.str(&c.Data),
		"sync_interval": func(p string, v *yaml.Node) {
			if v.Kind == yaml.ScalarNode && v.Value == "always" {
				c.SyncInterval = 0
				return
			}
			d.duration(v, p, 1, &c.SyncInterval)
		},
		"tls": func(p string, v *yaml.Node) {
			d.mapping(v, p, map[string]field{
				"cert": d.str(&c.TLS.Cert),
				"key":  d.str(&c.TLS.Key),
				"ca":   d.str(&c.TLS.CA),
			})
		},
		"secret_file":            d.str(&c.SecretFile),
		"unsafe":                 func(p string, v *yaml.Node) { d.boolean(v, p, &c.Unsafe) },
		"forward_timeout":        func(p string, v *yaml.Node) { d.duration(v, p, 1, &c.ForwardTimeout) },
		"retained_tombstone_ttl": func(p string, v *yaml.Node) { d.duration(v, p, time.Second, &c.TombstoneTTL) },
		"adopt_after":            func(p string, v *yaml.Node) { d.duration(v, p, time.Second, &c.AdoptAfter) },
		"replace_after":          func(p string, v *yaml.Node) { d.duration(v, p, time.Second, &c.ReplaceAfter) },
		"partitions": func(p string, v *yaml.Node) {
			if r, ok := d.integer(v, p, 1, 1024); ok {
				c.Partitions = int(r)
			}
		},
	})
}

// hostPort decodes a HOST:PORT.
func (d *decoder) hostPort(dst *string) field {
	return func(p string, v *yaml.Node) {
		var s string
		d.str(&s)(p, v)
		if s == "" {
			return
		}
		if _, _, err := net.SplitHostPort(s); err != nil {
			d.errorf(v, "%s: want HOST:PORT such as 10.0.0.11:7222, got %q", p, s)
			return
		}
		*dst = s
	}
}

// ClusterData returns the engine's data directory: the configured one, or
// "cluster" inside the store's data directory.
func (c *Config) ClusterData() string {
	if c.Cluster.Data != "" {
		return c.Cluster.Data
	}
	return filepath.Join(c.Store.Data, "cluster")
}

// resolveClusterData makes the cluster's relative file names (data
// directory, TLS files, secret) relative to dir, the config file's
// directory.
func (c *Config) resolveClusterData(dir string) {
	cc := &c.Cluster
	for _, p := range []*string{&cc.Data, &cc.TLS.Cert, &cc.TLS.Key, &cc.TLS.CA, &cc.SecretFile} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
}
