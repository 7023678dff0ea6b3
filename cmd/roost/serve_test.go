package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/config"
	wait "github.com/roost-mqtt/roost/internal/eventually"
	"github.com/roost-mqtt/roost/internal/mqtttest"
)

func writeConfig(t *testing.T, src string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "roost.yaml")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestServeFlags(t *testing.T) {
	t.Parallel()
	file := writeConfig(t, "listeners:\n  - url: mqtt://127.0.0.1:5555\nlog: {level: debug, format: json}\nlimits: {max_queued: 7}\n")
	tests := []struct {
		name      string
		args      []string
		addrs     []string
		level     slog.Level
		format    config.LogFormat
		maxQueued int
	}{
		{"defaults", nil, []string{"0.0.0.0:1883"}, slog.LevelInfo, config.LogText, 1000},
		{"listen", []string{"--listen", "mqtt://127.0.0.1:0"}, []string{"127.0.0.1:0"}, slog.LevelInfo, config.LogText, 1000},
		{"listen twice", []string{"-listen", "mqtt://127.0.0.1:0", "--listen=mqtt://[::1]:1"}, []string{"127.0.0.1:0", "[::1]:1"}, slog.LevelInfo, config.LogText, 1000},
		{"log flags", []string{"--log-level", "warn", "--log-format", "json"}, []string{"0.0.0.0:1883"}, slog.LevelWarn, config.LogJSON, 1000},
		{"config", []string{"--config", file}, []string{"127.0.0.1:5555"}, slog.LevelDebug, config.LogJSON, 7},
		{"flags beat config", []string{"--config", file, "--log-level", "error", "--listen", "mqtt://127.0.0.1:0"}, []string{"127.0.0.1:0"}, slog.LevelError, config.LogJSON, 7},
		{"flag order does not matter", []string{"--log-format", "text", "--config", file}, []string{"127.0.0.1:5555"}, slog.LevelDebug, config.LogText, 7},
	}
	for _, tt := range tests {
		var stderr bytes.Buffer
		cfg, code, ok := serveConfig(tt.args, &stderr)
		if !ok {
			t.Errorf("%s: exit %d: %s", tt.name, code, stderr.String())
			continue
		}
		var addrs []string
		for _, ln := range cfg.Listeners {
			addrs = append(addrs, ln.Addr)
		}
		if strings.Join(addrs, " ") != strings.Join(tt.addrs, " ") {
			t.Errorf("%s: listeners %v, want %v", tt.name, addrs, tt.addrs)
		}
		if cfg.Log.Level != tt.level || cfg.Log.Format != tt.format {
			t.Errorf("%s: log %+v, want level %v format %v", tt.name, cfg.Log, tt.level, tt.format)
		}
		if cfg.Limits.MaxQueued != tt.maxQueued {
			t.Errorf("%s: max_queued %d, want %d", tt.name, cfg.Limits.MaxQueued, tt.maxQueued)
		}
	}
}

func TestServeFlagErrors(t *testing.T) {
	t.Parallel()
	bad := writeConfig(t, "log:\n  level: loud\n")
	tls := writeConfig(t, "listeners:\n  - url: mqtts://0.0.0.0:0\n")
	anon := writeConfig(t, "listeners:\n  - url: mqtt://127.0.0.1:0\n    anonymous: false\n")
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--listen", "mqtts://127.0.0.1:0"}, 2, "listen mqtts://127.0.0.1:0: mqtts:// needs a certificate: set tls.cert and tls.key (or --tls-cert and --tls-key)"},
		{[]string{"--listen", "wss://127.0.0.1:0"}, 2, "wss:// needs a certificate"},
		{[]string{"--listen", "wss://127.0.0.1:0", "--tls-cert", "c.pem"}, 2, "--tls-cert and --tls-key go together"},
		{[]string{"--config", tls}, 1, "roost.yaml:2: listeners[0]: mqtts:// needs a certificate"},
		{[]string{"--config", anon}, 2, "listen mqtt://127.0.0.1:0: anonymous access is off but nothing can authenticate clients"},
		{[]string{"--listen", "ftp://127.0.0.1:0"}, 2, `invalid value "ftp://127.0.0.1:0" for flag -listen: unsupported scheme "ftp"`},
		{[]string{"--listen", "127.0.0.1:1883"}, 2, `"127.0.0.1:1883" is not a URL`},
		{[]string{"--listen", "mqtt://127.0.0.1"}, 2, "missing port"},
		{[]string{"--log-level", "loud"}, 2, `invalid value "loud" for flag -log-level: must be one of debug, info, warn, error`},
		{[]string{"--log-format", "xml"}, 2, `invalid value "xml" for flag -log-format: must be text or json`},
		{[]string{"--nope"}, 2, "flag provided but not defined: -nope"},
		{[]string{"extra"}, 2, `roost serve: unexpected argument "extra"`},
		{[]string{"--config", bad}, 1, `roost serve: roost.yaml:2: log.level: must be one of debug, info, warn, error, got "loud"`},
		{[]string{"--config", bad, "--log-level", "info"}, 1, "roost.yaml:2: log.level"}, // a bad file is bad even if overridden
		{[]string{"--config", filepath.Join(t.TempDir(), "missing.yaml")}, 1, "no such file or directory"},
	}
	for _, tt := range tests {
		code, stdout, stderr := runCmd(t, append([]string{"serve"}, tt.args...)...)
		if code != tt.code || !strings.Contains(stderr, tt.want) {
			t.Errorf("roost serve %q: exit %d, stderr:\n%s\nwant exit %d and %q", tt.args, code, stderr, tt.code, tt.want)
		}
		if stdout != "" {
			t.Errorf("roost serve %q: stdout %q, want nothing", tt.args, stdout)
		}
	}
}

// A port in use fails the start with exit 1, and no listener is left open.
func TestServeAddressInUse(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	code, _, stderr := runCmd(t, "serve", "--listen", "mqtt://127.0.0.1:0", "--listen", "mqtt://"+busy.Addr().String())
	if code != 1 || !strings.Contains(stderr, "address already in use") {
		t.Errorf("exit %d, stderr:\n%s\nwant exit 1 and address already in use", code, stderr)
	}
	if strings.Contains(stderr, "listener ready") {
		t.Errorf("a listener was reported ready:\n%s", stderr)
	}
}

// syncBuffer is a buffer safe to write from the server while the test
// reads it.
type syncBuffer = mqtttest.LogBuffer

// eventually polls cond until it returns true or d passes, and reports
// whether it did (internal/eventually), so that a caller can print the log
// as it is at the failure.
func eventually(t *testing.T, d time.Duration, cond func() bool) bool {
	t.Helper()
	return wait.Within(d, cond)
}

var readyLine = regexp.MustCompile(`msg="listener ready" addr=(\S+) scheme=mqtt`)

// roost serve on a free port accepts an MQTT 3.1.1 client and exits 0 when
// its context ends (as on SIGINT), with the client still connected.
func TestServeEndToEnd(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr syncBuffer
	exit := make(chan int, 1)
	dataDir := t.TempDir()
	go func() {
		exit <- run(ctx, []string{"serve", "--listen", "mqtt://127.0.0.1:0", "--log-level", "debug", "--data", dataDir}, stdio{out: io.Discard, err: &stderr})
	}()

	var addr string
	if !eventually(t, 10*time.Second, func() bool {
		m := readyLine.FindStringSubmatch(stderr.String())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	}) {
		t.Fatalf("no listener ready line; log:\n%s", stderr.String())
	}

	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	connect := []byte{
		0x10, 16, // CONNECT, remaining length
		0, 4, 'M', 'Q', 'T', 'T', // protocol name [MQTT-3.1.2-1]
		4,     // protocol level 4: MQTT 3.1.1
		0x02,  // flags: clean session
		0, 60, // keep alive 60s
		0, 4, 'e', '2', 'e', '1', // client id
	}
	if _, err := conn.Write(connect); err != nil {
		t.Fatal(err)
	}
	connack := make([]byte, 4)
	if _, err := io.ReadFull(conn, connack); err != nil {
		t.Fatalf("reading CONNACK: %v; log:\n%s", err, stderr.String())
	}
	if want := []byte{0x20, 0x02, 0x00, 0x00}; !bytes.Equal(connack, want) {
		t.Fatalf("CONNACK % x, want % x", connack, want)
	}

	cancel()
	select {
	case code := <-exit:
		if code != 0 {
			t.Errorf("exit %d, want 0; log:\n%s", code, stderr.String())
		}
	case <-time.After(shutdownTimeout + 5*time.Second):
		t.Fatalf("serve did not return after its context ended; log:\n%s", stderr.String())
	}
	if log := stderr.String(); !strings.Contains(log, `msg="shutting down"`) || !strings.Contains(log, `msg=stopped`) {
		t.Errorf("log lacks the shutdown lines:\n%s", log)
	}
}
