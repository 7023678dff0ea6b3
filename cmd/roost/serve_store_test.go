package main

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/store"
)

func TestServeStoreFlags(t *testing.T) {
	t.Parallel()
	var stderr bytes.Buffer
	cfg, _, ok := serveConfig([]string{"--data", "d", "--sync", "50ms", "--memory"}, &stderr)
	if !ok {
		t.Fatal(stderr.String())
	}
	if cfg.Store.Data != "d" || !cfg.Store.Memory || cfg.Store.Sync != (store.Sync{Mode: store.SyncInterval, Interval: 50 * time.Millisecond}) {
		t.Errorf("store config %+v", cfg.Store)
	}
	if _, code, ok := serveConfig([]string{"--sync", "often"}, &stderr); ok || code != 2 {
		t.Errorf("--sync often: ok=%v code=%d", ok, code)
	}
	for flag, want := range map[string]int64{"1GiB": 1 << 30, "0": 0, "65536": 65536} {
		cfg, _, ok := serveConfig([]string{"--min-free", flag}, &stderr)
		if !ok || cfg.Store.MinFree != want {
			t.Errorf("--min-free %s: ok=%v, MinFree %d; want %d", flag, ok, cfg.Store.MinFree, want)
		}
	}
	for flag, want := range map[string]int64{"16MiB": 16 << 20, "0": 0} {
		cfg, _, ok := serveConfig([]string{"--ballast", flag}, &stderr)
		if !ok || cfg.Store.Ballast != want {
			t.Errorf("--ballast %s: ok=%v, Ballast %d; want %d", flag, ok, cfg.Store.Ballast, want)
		}
	}
	if cfg, _, _ := serveConfig(nil, &stderr); cfg.Store.Ballast != store.DefaultBallast {
		t.Errorf("default Ballast %d, want %d", cfg.Store.Ballast, store.DefaultBallast)
	}
	if _, code, ok := serveConfig([]string{"--ballast", "lots"}, &stderr); ok || code != 2 {
		t.Errorf("--ballast lots: ok=%v code=%d", ok, code)
	}
	if cfg, _, _ := serveConfig(nil, &stderr); cfg.Store.MinFree != store.DefaultMinFree {
		t.Errorf("default MinFree %d, want %d", cfg.Store.MinFree, store.DefaultMinFree)
	}
	for _, bad := range []string{"lots", "-1", "99999999999GiB"} {
		if _, code, ok := serveConfig([]string{"--min-free", bad}, &stderr); ok || code != 2 {
			t.Errorf("--min-free %s: ok=%v code=%d", bad, ok, code)
		}
	}
}

// A store another process holds is a clear error at start, naming it.
func TestServeStoreLocked(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var first syncBuffer
	exit := make(chan int, 1)
	go func() {
		exit <- run(ctx, []string{"serve", "--listen", "mqtt://127.0.0.1:0", "--data", dir}, stdio{out: io.Discard, err: &first})
	}()
	if !eventually(t, 10*time.Second, func() bool { return readyLine.MatchString(first.String()) }) {
		t.Fatalf("first broker not ready:\n%s", first.String())
	}
	code, _, stderr := runCmd(t, "serve", "--listen", "mqtt://127.0.0.1:0", "--data", dir)
	if code != 1 || !strings.Contains(stderr, "store "+dir+" is locked by another process") {
		t.Errorf("second serve on %s: exit %d, stderr:\n%s", dir, code, stderr)
	}
	cancel()
	if c := <-exit; c != 0 {
		t.Errorf("first broker exit %d:\n%s", c, first.String())
	}
}
