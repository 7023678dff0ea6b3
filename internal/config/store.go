package config

import (
	"math"
	"path/filepath"

	"go.yaml.in/yaml/v3"

	"github.com/roost-mqtt/roost/store"
)

// Store configures where the broker keeps sessions, queued messages and
// retained messages.
type Store struct {
	// Data is the directory of the on-disk store. A relative path in a
	// config file is relative to the file's directory; the default is
	// DefaultDataDir there (or in the working directory without a file).
	Data string
	// Memory keeps everything in memory: a restart loses it all.
	Memory bool
	// Sync is when writes reach stable storage; see store.Sync.
	Sync store.Sync
	// MinFree is the free space on the data disk below which new QoS 1/2
	// messages are refused (see store.DiskOptions.MinFree); 0 turns the
	// check off. Default store.DefaultMinFree.
	MinFree int64
	// Ballast is the space reserved in the data directory and released
	// when a write finds the disk full (see store.DiskOptions.Ballast);
	// 0 turns it off. Default store.DefaultBallast.
	Ballast int64
}

// DefaultDataDir is the store's directory when none is configured.
const DefaultDataDir = "data"

func (d *decoder) store(n *yaml.Node, path string, s *Store) {
	d.mapping(n, path, map[string]field{
		"data": func(p string, v *yaml.Node) {
			if d.scalar(v, p, "a directory path") {
				s.Data = v.Value
			}
		},
		"ballast": func(p string, v *yaml.Node) {
			if n, ok := d.bytes(v, p, 0, math.MaxInt64); ok {
				s.Ballast = int64(n)
			}
		},
		"memory": func(p string, v *yaml.Node) { d.boolean(v, p, &s.Memory) },
		"min_free": func(p string, v *yaml.Node) {
			if n, ok := d.bytes(v, p, 0, math.MaxInt64); ok {
				s.MinFree = int64(n)
			}
		},
		"sync": func(p string, v *yaml.Node) {
			if d.scalar(v, p, "always, none or a duration such as 100ms") {
				if sy, err := store.ParseSync(v.Value); d.ok(v, p, err) {
					s.Sync = sy
				}
			}
		},
	})
}

// DiskOptions returns the store.DiskOptions for s (whose zero MinFree and
// Ballast mean the defaults, where s's mean off).
func (s *Store) DiskOptions() store.DiskOptions {
	o := store.DiskOptions{Sync: s.Sync, MinFree: s.MinFree, Ballast: s.Ballast}
	if s.MinFree == 0 {
		o.MinFree = -1
	}
	if s.Ballast == 0 {
		o.Ballast = -1
	}
	return o
}

// resolveData makes a relative data directory relative to dir, the config
// file's directory.
func (s *Store) resolveData(dir string) {
	if !filepath.IsAbs(s.Data) {
		s.Data = filepath.Join(dir, s.Data)
	}
}
