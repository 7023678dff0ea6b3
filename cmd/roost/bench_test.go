package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/roost-mqtt/roost/bench/load"
)

func TestBench(t *testing.T) {
	t.Parallel()
	url := "mqtt://127.0.0.1:" + startBroker(t)
	out := filepath.Join(t.TempDir(), "result.json")
	code, stdout, stderr := runRoost(t, "bench", "fan-in", "--url", url, "-P", "2", "--warmup", "100ms",
		"--duration", "1100ms", "--json", out, "--pid", "auto")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"fan-in, 2 publishers -> 1 subscriber, QoS 0, 64 B, MQTT 3.1.1", "delivered", "latency", "p99", "broker RSS"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("summary lacks %q:\n%s", want, stdout)
		}
	}
	if !strings.Contains(stderr, "fan-in      measure") || !strings.Contains(stderr, "msgs/s") {
		t.Errorf("no progress line on stderr: %q", stderr)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var res load.Result
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if res.Scenario != load.FanIn || res.Publishers != 2 || res.DeliverRate <= 0 || res.Latency == nil ||
		res.Broker == nil || res.Broker.PID != os.Getpid() {
		t.Errorf("JSON result %s", b)
	}
}

func TestBenchConnections(t *testing.T) {
	t.Parallel()
	url := "mqtt://127.0.0.1:" + startBroker(t)
	code, stdout, stderr := runRoost(t, "bench", "--url", url, "-C", "50", "--batch", "20", "--duration", "100ms",
		"-q", "--pid", strconv.Itoa(os.Getpid()), "connections")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"50 opened of 50 attempted (50 requested), 0 failed", "conns/s", "RSS per conn"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("summary lacks %q:\n%s", want, stdout)
		}
	}
	if stderr != "" {
		t.Errorf("-q, yet stderr %q", stderr)
	}
}

// A broker whose RSS did not grow with the connections (its freed memory
// took them: TestBenchConnections measures the test process itself,
// shared with parallel tests) has 0 KiB per connection, which the
// summary shows; it used to leave the row out as if nothing was measured.
func TestBenchSummaryZeroRSSPerConn(t *testing.T) {
	t.Parallel()
	res := &load.Result{Scenario: load.Connections, URL: "mqtt://127.0.0.1:1883",
		Connections: &load.ConnStats{Requested: 50, Attempted: 50, Opened: 50},
		Broker:      &load.BrokerStats{PID: 1, RSSBeforeKiB: 203920, RSSAfterKiB: 203920, RSSMaxKiB: 204664}}
	var b strings.Builder
	writeSummary(&b, res)
	if !strings.Contains(b.String(), "RSS per conn  0.00 KiB at the end") {
		t.Errorf("summary lacks a 0 KiB RSS per conn:\n%s", b.String())
	}
	// Without the broker's process there is nothing to show.
	res.Broker = &load.BrokerStats{}
	b.Reset()
	writeSummary(&b, res)
	if strings.Contains(b.String(), "RSS per conn") {
		t.Errorf("RSS per conn without a broker process:\n%s", b.String())
	}
}

func TestBenchUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args     []string
		code     int
		inStderr string
	}{
		{[]string{"bench"}, 2, "name a scenario: fan-in, fan-out, pairs, latency, connections, overload"},
		{[]string{"bench", "fan-sideways"}, 2, `unknown scenario "fan-sideways"`},
		{[]string{"bench", "pairs", "fan-in"}, 2, `unexpected argument "fan-in"`},
		{[]string{"bench", "--qos", "3", "pairs"}, 2, "--qos must be"},
		{[]string{"bench", "--size", "4", "pairs"}, 2, "size must be at least 8"},
		{[]string{"bench", "--url", "ftp://x", "pairs"}, 2, "scheme must be"},
		{[]string{"bench", "--pid", "x", "pairs"}, 2, "--pid must be"},
		{[]string{"bench", "-h"}, 0, "Scenarios:"},
	}
	for _, tt := range tests {
		code, _, stderr := runRoost(t, tt.args...)
		if code != tt.code || !strings.Contains(stderr, tt.inStderr) {
			t.Errorf("roost %q: exit %d, stderr %q; want %d and %q", tt.args, code, stderr, tt.code, tt.inStderr)
		}
	}
}

// A broker that is not there: exit 1 with the dial error.
func TestBenchNoBroker(t *testing.T) {
	t.Parallel()
	_, port, _ := runRoost(t, "bench", "--free-port")
	code, _, stderr := runRoost(t, "bench", "--url", "mqtt://127.0.0.1:"+strings.TrimSpace(port), "-q", "pairs")
	if code != 1 || !strings.Contains(stderr, "refused") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

func TestBenchFreePort(t *testing.T) {
	t.Parallel()
	code, stdout, _ := runRoost(t, "bench", "--free-port")
	if p, err := strconv.Atoi(strings.TrimSpace(stdout)); code != 0 || err != nil || p <= 0 || p > 65535 {
		t.Errorf("exit %d, stdout %q", code, stdout)
	}
}

func TestGroup(t *testing.T) {
	t.Parallel()
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", -1234567: "-1,234,567", 100000: "100,000"} {
		if got := group(n); got != want {
			t.Errorf("group(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestBenchCausality(t *testing.T) {
	t.Parallel()
	url := "mqtt://127.0.0.1:" + startBroker(t)
	code, stdout, stderr := runRoost(t, "bench", "causality", "--url", url, "--trials", "3", "--gaps", "50us,1ms",
		"--idle", "60ms", "--quiet", "5ms", "-q")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"causality, SUBSCRIBE then PUBLISH on another connection", "13 pairs of connections",
		"gap 50µs", "gap 1ms", "inversions per 1,000", "of 3;", "wake-up to PUBACK p50"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("summary lacks %q:\n%s", want, stdout)
		}
	}
	code, _, stderr = runRoost(t, "bench", "causality", "--url", url, "--gaps", "50us,soon")
	if code != 2 || !strings.Contains(stderr, "--gaps") {
		t.Errorf("bad --gaps: exit %d, %q", code, stderr)
	}
}
