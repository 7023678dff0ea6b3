package main

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

var httpReadyLine = regexp.MustCompile(`msg="http ready" addr=(\S+)`)

// roost serve --http: health checks open, metrics and the API behind the
// token, the console's WebSocket listener advertised, all gone at exit.
func TestServeHTTP(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr syncBuffer
	exit := make(chan int, 1)
	go func() {
		exit <- run(ctx, []string{"serve", "--memory", "--listen", "mqtt://127.0.0.1:0", "--listen", "ws://127.0.0.1:0/mqtt",
			"--http", "127.0.0.1:0", "--http-token", "tok"}, stdio{out: io.Discard, err: &stderr})
	}()
	var base string
	if !eventually(t, 10*time.Second, func() bool {
		m := httpReadyLine.FindStringSubmatch(stderr.String())
		if m != nil {
			base = "http://" + m[1]
		}
		return m != nil && strings.Contains(stderr.String(), "listener ready")
	}) {
		t.Fatalf("no http ready line; log:\n%s", stderr.String())
	}
	get := func(path, token string) (int, string) {
		req, _ := http.NewRequest("GET", base+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if !eventually(t, 5*time.Second, func() bool { code, _ := get("/readyz", ""); return code == 200 }) {
		t.Fatal("/readyz never answered 200")
	}
	for _, c := range []struct {
		path, token string
		code        int
		body        string
	}{
		{"/healthz", "", 200, "ok"},
		{"/readyz", "", 200, "ready"},
		{"/metrics", "", 401, ""},
		{"/metrics", "tok", 200, "roost_connections 0"},
		{"/api/console", "tok", 200, `"websockets":["ws://127.0.0.1:`},
		{"/", "tok", 200, "Roost console"},
	} {
		code, body := get(c.path, c.token)
		if code != c.code || !strings.Contains(body, c.body) {
			t.Errorf("GET %s: %d %.200q, want %d and %q", c.path, code, body, c.code, c.body)
		}
	}
	cancel()
	select {
	case code := <-exit:
		if code != 0 {
			t.Errorf("exit %d; log:\n%s", code, stderr.String())
		}
	case <-time.After(shutdownTimeout + 5*time.Second):
		t.Fatal("serve did not return")
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("HTTP server still answering after exit")
	}
}

func TestServeHTTPFlagErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--http", "0.0.0.0:0"}, "needs http.token (--http-token)"},
		{[]string{"serve", "--http", "8080"}, "want HOST:PORT"},
	} {
		code, _, stderr := runCmd(t, c.args...)
		if code != 2 || !strings.Contains(stderr, c.want) {
			t.Errorf("roost %q: exit %d, stderr %q, want 2 and %q", c.args, code, stderr, c.want)
		}
	}
}
