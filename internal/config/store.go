package config

import (
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
		"memory": func(p string, v *yaml.Node) { d.boolean(v, p, &s.Memory) },
		"sync": func(p string, v *yaml.Node) {
			if d.scalar(v, p, "always, none or a duration such as 100ms") {
				if sy, err := store.ParseSync(v.Value); d.ok(v, p, err) {
					s.Sync = sy
				}
			}
		},
	})
}

// resolveData makes a relative data directory relative to dir, the config
// file's directory.
func (s *Store) resolveData(dir string) {
	if !filepath.IsAbs(s.Data) {
		s.Data = filepath.Join(dir, s.Data)
	}
}
