package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/store"
)

func TestParseStore(t *testing.T) {
	tests := []struct {
		yaml string
		want Store
		err  string
	}{
		{"", Store{Data: "data", MinFree: store.DefaultMinFree, Ballast: store.DefaultBallast}, ""},
		{"store: {data: /var/lib/roost, sync: 100ms}", Store{Data: "/var/lib/roost", MinFree: store.DefaultMinFree, Ballast: store.DefaultBallast, Sync: store.Sync{Mode: store.SyncInterval, Interval: 100 * time.Millisecond}}, ""},
		{"store: {memory: true, sync: none}", Store{Data: "data", MinFree: store.DefaultMinFree, Ballast: store.DefaultBallast, Memory: true, Sync: store.Sync{Mode: store.SyncNone}}, ""},
		{"store: {min_free: 1GiB}", Store{Data: "data", MinFree: 1 << 30, Ballast: store.DefaultBallast}, ""},
		{"store: {ballast: 16MiB}", Store{Data: "data", MinFree: store.DefaultMinFree, Ballast: 16 << 20}, ""},
		{"store: {ballast: 0}", Store{Data: "data", MinFree: store.DefaultMinFree}, ""},
		{"store: {min_free: 0}", Store{Data: "data", Ballast: store.DefaultBallast}, ""},
		{"store: {min_free: -1}", Store{}, `roost.yaml:1: store.min_free: must be a size such as 65536, 512KiB or 1MiB, got "-1"`},
		{"store: {min_free: lots}", Store{}, `roost.yaml:1: store.min_free: must be a size`},
		{"store: {sync: sometimes}", Store{}, `roost.yaml:1: store.sync: sync "sometimes": want always, none or a positive duration`},
		{"store: {memory: 1}", Store{}, "roost.yaml:1: store.memory: must be"},
		{"store: {dir: x}", Store{}, `roost.yaml:1: unknown key "dir" in store`},
	}
	for _, tt := range tests {
		c, err := Parse("roost.yaml", []byte(tt.yaml))
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: error %v, want %q", tt.yaml, err, tt.err)
			}
			continue
		}
		if err != nil || c.Store != tt.want {
			t.Errorf("%q: %+v, %v; want %+v", tt.yaml, c.Store, err, tt.want)
		}
	}
}

// min_free 0 turns the free-space check off, ballast 0 the ballast;
// store.DiskOptions says that with negative values.
func TestStoreDiskOptions(t *testing.T) {
	for _, tt := range []struct{ in, want int64 }{{0, -1}, {store.DefaultMinFree, store.DefaultMinFree}, {1 << 30, 1 << 30}} {
		s := Store{MinFree: tt.in, Ballast: tt.in, Sync: store.Sync{Mode: store.SyncNone}}
		if o := s.DiskOptions(); o.MinFree != tt.want || o.Ballast != tt.want || o.Sync != s.Sync {
			t.Errorf("MinFree and Ballast %d: DiskOptions %+v, want %d", tt.in, o, tt.want)
		}
	}
}

// A relative data directory in a file is relative to the file.
func TestLoadResolvesDataDir(t *testing.T) {
	dir := t.TempDir()
	for yaml, want := range map[string]string{
		"":                        filepath.Join(dir, "data"),
		"store: {data: state}":    filepath.Join(dir, "state"),
		"store: {data: /abs/dir}": "/abs/dir",
	} {
		file := filepath.Join(dir, "roost.yaml")
		os.WriteFile(file, []byte(yaml), 0o600)
		c, err := Load(file)
		if err != nil || c.Store.Data != want {
			t.Errorf("%q: data %q, %v; want %q", yaml, c.Store.Data, err, want)
		}
	}
}
