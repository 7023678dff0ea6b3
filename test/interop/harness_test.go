package interop

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/mosquittotest"
)

// proto is an MQTT protocol version under test.
type proto struct {
	name  string // subtest name
	level byte   // protocol level on the wire: 4 for 3.1.1, 5 for 5.0
}

var (
	v311 = proto{"v311", 4}
	v5   = proto{"v5", 5}
)

// mosqVersion is the -V argument mosquitto_pub/mosquitto_sub take.
func (p proto) mosqVersion() string {
	if p.level == 5 {
		return "mqttv5"
	}
	return "mqttv311"
}

// forEachProto runs fn as parallel subtests, one per protocol version.
func forEachProto(t *testing.T, fn func(t *testing.T, p proto)) {
	t.Helper()
	for _, p := range []proto{v311, v5} {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			fn(t, p)
		})
	}
}

// target names the broker the tests run against.
type target string

const (
	targetRoost     target = "roost"
	targetMosquitto target = "mosquitto"
)

func currentTarget(t *testing.T) target {
	t.Helper()
	switch v := os.Getenv("ROOST_INTEROP_TARGET"); v {
	case "", "roost":
		return targetRoost
	case "mosquitto":
		return targetMosquitto
	default:
		t.Fatalf("ROOST_INTEROP_TARGET=%q: want roost or mosquitto", v)
		return ""
	}
}

// brokerConfig is what a scenario needs from the broker beyond defaults.
type brokerConfig struct {
	// sysInterval enables $SYS publishing at this interval; zero disables it.
	sysInterval time.Duration
}

// testBroker is a running broker for one test.
type testBroker struct {
	target target
	addr   string // host:port
	host   string
	port   int
}

// url is the mqtt:// URL mqtt.js and paho.mqtt.golang take.
func (b *testBroker) url() string { return "mqtt://" + b.addr }

// startBroker starts a broker for t and stops it when t ends.
func startBroker(t *testing.T, cfg brokerConfig) *testBroker {
	t.Helper()
	var b *testBroker
	switch tg := currentTarget(t); tg {
	case targetMosquitto:
		b = startMosquitto(t, cfg)
	default:
		b = startRoost(t, cfg)
	}
	waitBrokerReady(t, b)
	return b
}

func startRoost(t *testing.T, cfg brokerConfig) *testBroker {
	t.Helper()
	logs := newLogSink(t, "roost")
	sys := time.Duration(-1)
	if cfg.sysInterval > 0 {
		sys = cfg.sysInterval
	}
	srv, err := broker.New(broker.Options{
		Logger:      slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		SysInterval: sys,
	})
	if err != nil {
		t.Fatalf("broker.New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	served := make(chan error, 1)
	go func() {
		// A panic here would kill the whole test binary; turn it into a
		// test failure instead (Serve panics until the broker lands).
		defer func() {
			if r := recover(); r != nil {
				served <- fmt.Errorf("Serve panicked: %v", r)
			}
		}()
		served <- srv.Serve(ln)
	}()
	t.Cleanup(func() { stopRoost(t, srv, ln, served) })
	addr := ln.Addr().(*net.TCPAddr)
	return &testBroker{target: targetRoost, addr: addr.String(), host: "127.0.0.1", port: addr.Port}
}

func stopRoost(t *testing.T, srv *broker.Server, ln net.Listener, served chan error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Errorf("Shutdown panicked: %v", r)
				ln.Close()
			}
		}()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	}()
	select {
	case err := <-served:
		if !errors.Is(err, broker.ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	case <-ctx.Done():
		t.Errorf("Serve did not return after Shutdown")
	}
}

func startMosquitto(t *testing.T, cfg brokerConfig) *testBroker {
	t.Helper()
	sys := 0
	if cfg.sysInterval > 0 {
		sys = max(1, int(cfg.sysInterval/time.Second))
	}
	b := mosquittotest.StartConfig(t, mosquittotest.Config{
		Lines:  []string{"persistence false", fmt.Sprintf("sys_interval %d", sys), "set_tcp_nodelay true", "log_type all"},
		Output: newLogSink(t, "mosquitto"),
	})
	return &testBroker{target: targetMosquitto, addr: b.Addr, host: "127.0.0.1", port: b.Port}
}

// waitBrokerReady checks that the broker answers an MQTT 3.1.1 CONNECT with
// CONNACK, so a broken broker fails fast with one clear message instead of
// every peer timing out.
func waitBrokerReady(t *testing.T, b *testBroker) {
	t.Helper()
	var err error
	for i := 0; i < 20; i++ {
		if err = probeConnect(b.addr); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s broker at %s does not answer CONNECT: %v", b.target, b.addr, err)
}

func probeConnect(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	// CONNECT, protocol "MQTT" level 4, clean session, keep alive 10,
	// client id "probe" [MQTT-3.1].
	connect := []byte{0x10, 17, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 10, 0, 5, 'p', 'r', 'o', 'b', 'e'}
	if _, err := c.Write(connect); err != nil {
		return err
	}
	ack := make([]byte, 4)
	if _, err := io.ReadFull(c, ack); err != nil {
		return fmt.Errorf("reading CONNACK: %w", err)
	}
	if ack[0] != 0x20 || ack[3] != 0 {
		return fmt.Errorf("want CONNACK accepted, got % x", ack)
	}
	c.Write([]byte{0xE0, 0}) // DISCONNECT
	return nil
}

// requireTool returns the path of a peer binary or fails the test: a missing
// peer must never turn into a silently skipped scenario.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		// mosquitto itself lives in /usr/sbin, which not every PATH has.
		if _, serr := os.Stat("/usr/sbin/" + name); serr == nil {
			return "/usr/sbin/" + name
		}
		t.Fatalf("%s not found on PATH: run ./scripts/test.sh (it installs mosquitto, mosquitto-clients and the npm peers)", name)
	}
	return p
}

// eventually polls cond every 10ms until it holds or d passes.
func eventually(t *testing.T, d time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: "+format, append([]any{d}, args...)...)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testContext is a context bounded by d and by the test's end.
func testContext(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

var idSeq atomic.Int64

// clientID returns an id unique within the test binary, readable in logs.
func clientID(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, os.Getpid()%10000, idSeq.Add(1))
}

// logSink collects a broker's or peer's output; it is printed when the test
// fails, or streamed to stderr with ROOST_INTEROP_LOG=1.
type logSink struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	stream bool
	name   string
}

func newLogSink(t *testing.T, name string) *logSink {
	s := &logSink{name: name, stream: os.Getenv("ROOST_INTEROP_LOG") == "1"}
	t.Cleanup(func() {
		if t.Failed() && !s.stream {
			t.Logf("---- %s output ----\n%s", name, s.tail(150))
		}
	})
	return s
}

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stream {
		fmt.Fprintf(os.Stderr, "[%s] %s", s.name, p)
	}
	return s.buf.Write(p)
}

func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

func (s *logSink) tail(n int) string {
	lines := strings.Split(strings.TrimRight(s.String(), "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... %d lines omitted", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
