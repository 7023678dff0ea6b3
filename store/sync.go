package store

import (
	"fmt"
	"time"
)

// SyncMode says when the disk store forces its writes to stable storage.
type SyncMode uint8

// Sync modes; see Sync.
const (
	SyncAlways   SyncMode = iota // fsync every commit before acknowledging
	SyncInterval                 // acknowledge on write; fsync every Interval
	SyncNone                     // acknowledge on write; leave syncing to the OS and Pebble
)

// Sync is the store's sync policy. What each mode can lose:
//
//   - SyncAlways (the default): nothing acknowledged, whether the process is
//     killed or the machine loses power. Concurrent publishes share one
//     fsync (group commit).
//   - SyncInterval: acknowledgements do not wait for the disk. A crash of
//     the process or of the machine can lose what was acknowledged in the
//     last Interval (and whatever was not yet handed to the OS).
//   - SyncNone: as SyncInterval, but with no bound: writes reach the disk
//     when Pebble flushes its memtable or the OS writes back its cache.
//
// The store itself is never corrupted by a crash in any mode: a torn
// write at the end of the log is discarded when it is next opened.
type Sync struct {
	Mode     SyncMode
	Interval time.Duration // SyncInterval only; > 0
}

// ParseSync parses "always", "none" or a duration such as "100ms"
// (SyncInterval). The error names the accepted forms.
func ParseSync(s string) (Sync, error) {
	switch s {
	case "always", "":
		return Sync{Mode: SyncAlways}, nil
	case "none":
		return Sync{Mode: SyncNone}, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return Sync{}, fmt.Errorf("sync %q: want always, none or a positive duration such as 100ms", s)
	}
	return Sync{Mode: SyncInterval, Interval: d}, nil
}

// String returns the form ParseSync reads.
func (s Sync) String() string {
	switch s.Mode {
	case SyncInterval:
		return s.Interval.String()
	case SyncNone:
		return "none"
	}
	return "always"
}
