package auth

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/mqtttest"
)

func TestWatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "acl")
	// Atomically (temp file, mtime, rename): the watcher polls every
	// 10 ms, and a write in place gave it the truncated file with a new
	// mtime first, then the whole one with mod: two reports for one
	// change, the second taken for the next change's (a suite run).
	write := func(s string, mod time.Time) {
		t.Helper()
		mqtttest.WriteFile(t, path, []byte(s), mod)
	}
	t0 := time.Now().Add(-time.Hour)
	write("topic read a\n", t0)
	a, err := LoadACLFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	trigger := make(chan struct{})
	reports := make(chan error, 10)
	done := make(chan struct{})
	w := NewWatcher(a)
	go func() {
		w.Run(ctx, 10*time.Millisecond, trigger, func(_ string, err error) { reports <- err })
		close(done)
	}()
	defer func() { cancel(); <-done }()
	next := func() error {
		select {
		case err := <-reports:
			return err
		case <-time.After(5 * time.Second):
			t.Fatal("no reload")
			return nil
		}
	}
	c := info("", "x")
	write("topic read b\n", t0.Add(time.Second)) // same size, newer mtime
	if err := next(); err != nil || !a.Allow(ctx, c, rcv, "b") {
		t.Fatalf("change not reloaded: %v", err)
	}
	write("topic bad b\n", t0.Add(2*time.Second))
	if err := next(); err == nil || !a.Allow(ctx, c, rcv, "b") {
		t.Fatalf("bad file: %v, and the old rules must stay", err)
	}
	trigger <- struct{}{} // SIGHUP rereads even an unchanged file
	if err := next(); err == nil {
		t.Fatal("trigger: no reload attempt")
	}
}
