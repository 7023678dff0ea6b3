package auth

import (
	"context"
	"os"
	"time"
)

// Reloader is a rule source read from a file: PasswordFile and ACL.
type Reloader interface {
	// Path is the file to watch.
	Path() string
	// Reload rereads the file; on error the old contents stay in force.
	Reload() error
}

// Watcher reloads files when told to (SIGHUP) and when they change.
type Watcher struct {
	rs   []Reloader
	seen []stamp
}

// NewWatcher notes the current state of each file of rs, so that changes
// from now on are seen: make it right after loading them.
func NewWatcher(rs ...Reloader) *Watcher {
	w := &Watcher{rs: rs, seen: make([]stamp, len(rs))}
	for i, r := range rs {
		w.seen[i] = stampOf(r.Path())
	}
	return w
}

// Run reloads each file when trigger fires and when its modification time
// or size changes, checked every interval, until ctx ends. report is
// called after every reload attempt with its error (nil on success); a
// file that fails to parse keeps the previous rules and is tried again at
// its next change. Connections stay up: their next check simply sees the
// new rules.
func (w *Watcher) Run(ctx context.Context, interval time.Duration, trigger <-chan struct{}, report func(path string, err error)) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		force := false
		select {
		case <-ctx.Done():
			return
		case <-trigger:
			force = true
		case <-tick.C:
		}
		for i, r := range w.rs {
			st := stampOf(r.Path())
			if !force && st == w.seen[i] {
				continue
			}
			w.seen[i] = st
			report(r.Path(), r.Reload())
		}
	}
}

// stamp is what tells that a file changed. Editors that replace the file
// (rename over it) change the modification time too.
type stamp struct {
	mod  time.Time
	size int64
	ok   bool
}

func stampOf(path string) stamp {
	fi, err := os.Stat(path)
	if err != nil {
		return stamp{}
	}
	return stamp{mod: fi.ModTime(), size: fi.Size(), ok: true}
}
