package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/brokertest"
)

// roost serve starts the bridges of its configuration, reports them in
// /api/bridges and /metrics, and stops them at exit.
func TestServeBridges(t *testing.T) {
	_, remote := brokertest.Start(t, broker.Options{})
	cfg := writeConfig(t, fmt.Sprintf(`bridges:
  - name: up
    addresses: [mqtt://%s]
    backoff: {min: 50ms, max: 200ms}
    topics: ['x/# both 1']
`, remote))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr syncBuffer
	exit := make(chan int, 1)
	go func() {
		exit <- run(ctx, []string{"serve", "--config", cfg, "--memory", "--listen", "mqtt://127.0.0.1:0",
			"--http", "127.0.0.1:0", "--http-token", "tok"}, stdio{out: io.Discard, err: &stderr})
	}()
	var base string
	if !eventually(t, 10*time.Second, func() bool {
		m := httpReadyLine.FindStringSubmatch(stderr.String())
		if m != nil {
			base = "http://" + m[1]
		}
		return m != nil && strings.Contains(stderr.String(), `msg="bridge started" bridge=up`)
	}) {
		t.Fatalf("no bridge started; log:\n%s", stderr.String())
	}
	get := func(path string) string {
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Header.Set("Authorization", "Bearer tok")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return string(b)
	}
	if !eventually(t, 10*time.Second, func() bool { return strings.Contains(get("/api/bridges"), `"connected":true`) }) {
		t.Fatalf("/api/bridges: %s\nlog:\n%s", get("/api/bridges"), stderr.String())
	}
	if m := get("/metrics"); !strings.Contains(m, `roost_bridge_connected{bridge="up"} 1`) {
		t.Errorf("no bridge metric in /metrics")
	}
	cancel()
	if code := <-exit; code != 0 {
		t.Errorf("exit %d; log:\n%s", code, stderr.String())
	}
}

// A bridge whose TLS CA file is missing stops roost serve from starting,
// with an error naming the bridge and the file.
func TestServeBridgeBadTLS(t *testing.T) {
	cfg := writeConfig(t, "bridges:\n  - {name: up, addresses: ['mqtts://127.0.0.1:1'], topics: ['#'], tls: {ca: nope.pem}}\n")
	code, _, stderr := runCmd(t, "serve", "--config", cfg, "--memory", "--listen", "mqtt://127.0.0.1:0")
	if code != 1 || !strings.Contains(stderr, "bridge up: tls.ca") || !strings.Contains(stderr, "nope.pem") {
		t.Errorf("exit %d, stderr:\n%s", code, stderr)
	}
}
