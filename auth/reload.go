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

// Watch reloads each of rs when trigger fires (SIGHUP) and when its file's
// modification time or size changes, checked every interval, until ctx
// ends. report is called after every reload attempt with its error (nil on
// success); a file that fails to parse keeps the previous rules, and is
// tried again at its next change. Connections stay up: the next check
// simply sees the new rules.
func Watch(ctx context.Context, interval time.Duration, trigger <-chan struct{}, report func(path string, err error), rs ...Reloader) {
	if len(rs) == 0 {
		return
	}
	seen := make([]stamp, len(rs))
	for i, r := range rs {
		seen[i] = stampOf(r.Path())
	}
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
		for i, r := range rs {
			st := stampOf(r.Path())
			if !force && st == seen[i] {
				continue
			}
			seen[i] = st
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
