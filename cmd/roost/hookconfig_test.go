package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// auth.http_hook.max_concurrent reaches the hook: with 1, two clients
// connecting at once are asked about one after the other. The service
// holds each request until a second one arrives beside it (or 500 ms
// pass), so a limit above 1 shows at once as two requests out together.
func TestServeHookMaxConcurrent(t *testing.T) {
	t.Parallel()
	var out, most atomic.Int32
	second := make(chan struct{})
	var once sync.Once
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		n := out.Add(1)
		defer out.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		if n > 1 {
			once.Do(func() { close(second) })
		}
		select {
		case <-second:
		case <-time.After(500 * time.Millisecond):
		}
		w.Write([]byte(`{"allow":true}`))
	}))
	defer hook.Close()
	cfg := writeConfig(t, fmt.Sprintf("listeners:\n  - url: mqtt://127.0.0.1:0\nauth:\n  http_hook: {url: %s, max_concurrent: 1, timeout: 5s}\n", hook.URL))
	b := startServe(t, "--config", cfg, "--memory")
	var wg sync.WaitGroup
	for _, user := range []string{"u1", "u2"} {
		wg.Go(func() {
			if !pahoUser(b.addr, user, "p") {
				t.Errorf("%s refused", user)
			}
		})
	}
	wg.Wait()
	if m := most.Load(); m != 1 {
		t.Errorf("%d hook requests out at once, want 1 (max_concurrent: 1)", m)
	}
}
