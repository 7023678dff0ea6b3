package interop

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/brokertest"
	wait "github.com/roost-mqtt/roost/internal/eventually"
	"github.com/roost-mqtt/roost/internal/mosquittotest"
	rc "github.com/roost-mqtt/roost/internal/rawclient"
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

// allPairs runs every scenario for both protocol versions over every
// transport; see protosOver for the default.
var allPairs = flag.Bool("interop.all", false, "run each scenario for both protocol versions over every transport, not both over tcp and one over each other transport")

// protosOver returns the protocol versions scenarios run over transport
// tr: both over TCP; over the others one each, unless -interop.all: 3.1.1
// over WSS (what mqtt.js in a WeChat mini program speaks by default), 5
// over TLS and WS. What breaks a transport (framing, deadlines, closes)
// seldom depends on the version, each version still meets a TLS and a
// WebSocket transport, and the whole matrix takes a third longer again
// (see doc.go).
func protosOver(tr rc.Transport) []proto {
	switch {
	case *allPairs || tr == rc.TCP:
		return []proto{v311, v5}
	case tr == rc.WSS:
		return []proto{v311}
	}
	return []proto{v5}
}

// forEachProto runs fn as parallel subtests, one per protocol version, in
// each transport's subtest (forTransports): TestX/wss/v5. See protosOver
// for which versions run over which transport.
func forEachProto(t *testing.T, fn func(t *testing.T, p proto)) {
	t.Helper()
	forTransports(t, func(t *testing.T) {
		tr, _ := transportOf(t)
		for _, p := range protosOver(tr) {
			t.Run(p.name, func(t *testing.T) {
				t.Parallel()
				fn(t, p)
			})
		}
	})
}

// transports are the transports scenarios run over: TCP, TLS, WebSocket
// and WebSocket over TLS for Roost; TCP and TLS for mosquitto, whose
// WebSocket listeners close a dropped connection only when the client
// next sends something (test/conformance/NOTES.md). PROXY-protocol TCP
// is left to the conformance suite: no peer here but our own code could
// send the header, so it would only run the TCP scenarios again.
func transports(t *testing.T) []rc.Transport {
	if currentTarget(t) == targetMosquitto {
		return []rc.Transport{rc.TCP, rc.TLS}
	}
	return []rc.Transport{rc.TCP, rc.TLS, rc.WS, rc.WSS}
}

// forTransports runs fn as parallel subtests named after each transport;
// startBroker in fn makes that the transport of the scenario's peers.
func forTransports(t *testing.T, fn func(t *testing.T)) {
	t.Helper()
	for _, tr := range transports(t) {
		t.Run(string(tr), func(t *testing.T) {
			t.Parallel()
			fn(t)
		})
	}
}

// transportOf returns the transport of the forTransports subtest t runs
// in, from its name.
func transportOf(t *testing.T) (rc.Transport, bool) {
	for _, seg := range strings.Split(t.Name(), "/")[1:] {
		if slices.Contains(transports(t), rc.Transport(seg)) {
			return rc.Transport(seg), true
		}
	}
	return "", false
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
	addr   string // the TCP listener's host:port
	// tr is the transport of the scenario: each peer connects over it if
	// it can (see the peers' start functions for what they fall back to).
	tr   rc.Transport
	urls map[rc.Transport]string // the broker's listeners
}

// url is the broker's URL for the scenario's transport, in the form
// mqtt.js takes (mqtt://, mqtts://, ws://.../mqtt, wss://.../mqtt).
func (b *testBroker) url() string { return b.urls[b.tr] }

// dial opens a connection over the scenario's transport for the Go peers
// (paho, the raw client); its read deadlines behave as on TCP on every
// transport (rawclient.Dialer.DialConn).
func (b *testBroker) dial() (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return pki.Dialer().DialConn(ctx, b.url())
}

// mosqArgs are the mosquitto_pub/mosquitto_sub arguments that reach the
// broker: TLS (with the test CA) for the tls and wss scenarios, else TCP,
// since the mosquitto clients do not speak WebSocket.
func (b *testBroker) mosqArgs() []string {
	tr := rc.TCP
	if b.tr == rc.TLS || b.tr == rc.WSS {
		tr = rc.TLS
	}
	u, err := url.Parse(b.urls[tr])
	if err != nil {
		panic(err) // the harness made the URL
	}
	args := []string{"-h", u.Hostname(), "-p", u.Port()}
	if tr == rc.TLS {
		args = append(args, "--cafile", pki.CAFile)
	}
	return args
}

// pki is the certificate authority of every broker's TLS listeners, which
// every peer trusts (made once in TestMain).
var pki *brokertest.PKI

func TestMain(m *testing.M) {
	flag.Parse()
	// The scenarios mostly wait on real peers (mosquitto, node, the
	// broker's timers), not on this process's CPU: with -parallel at
	// GOMAXPROCS (2 in CI) the package took 114 s, with 6 it took 71 s on
	// the same loaded 2-core machine. Six was chosen while each mqtt.js
	// client was a node process of its own, a few hundred ms of CPU to
	// start; they now share one (jshub_test.go).
	if !flagWasSet("test.parallel") {
		_ = flag.Set("test.parallel", "6")
	}
	dir, err := os.MkdirTemp("", "roost-interop-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "interop:", err)
		os.Exit(2)
	}
	if pki, err = brokertest.NewPKI(dir); err != nil {
		fmt.Fprintln(os.Stderr, "interop:", err)
		os.Exit(2)
	}
	code := m.Run()
	stopHub()
	os.RemoveAll(dir)
	os.Exit(code)
}

// startBroker starts a broker for t and stops it when t ends. The peers
// of the scenario use the transport of the forTransports (or
// forEachProto) subtest t runs in; a test outside one fails.
func startBroker(t *testing.T, cfg brokerConfig) *testBroker {
	t.Helper()
	tr, ok := transportOf(t)
	if !ok {
		t.Fatalf("startBroker: %s runs over no transport: wrap the test in forTransports or forEachProto so that it runs over each", t.Name())
	}
	var b *testBroker
	switch tg := currentTarget(t); tg {
	case targetMosquitto:
		b = startMosquitto(t, cfg)
	default:
		b = startRoost(t, cfg)
	}
	b.tr = tr
	waitBrokerReady(t, b)
	return b
}

// startRoost serves every transport (brokertest.StartAll). A line of the
// broker's log that reports a panic fails t.
func startRoost(t *testing.T, cfg brokerConfig) *testBroker {
	t.Helper()
	logs := newLogSink(t, "roost")
	// Registered before StartAll's cleanup, so it runs after the shutdown.
	t.Cleanup(func() { brokertest.FailOnPanic(t, logs.String()) })
	sys := time.Duration(-1)
	if cfg.sysInterval > 0 {
		sys = cfg.sysInterval
	}
	_, eps := brokertest.StartAll(t, broker.Options{
		Logger:      slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		SysInterval: sys,
	}, pki)
	u, err := url.Parse(eps[rc.TCP])
	if err != nil {
		t.Fatal(err)
	}
	return &testBroker{target: targetRoost, addr: u.Host, urls: eps}
}

// startMosquitto starts mosquitto with a TLS listener besides the default
// one.
func startMosquitto(t *testing.T, cfg brokerConfig) *testBroker {
	t.Helper()
	sys := 0
	if cfg.sysInterval > 0 {
		sys = max(1, int(cfg.sysInterval/time.Second))
	}
	b := mosquittotest.StartConfig(t, mosquittotest.Config{
		Lines: []string{"persistence false", fmt.Sprintf("sys_interval %d", sys), "set_tcp_nodelay true", "log_type all",
			"listener " + mosquittotest.PortToken + " 127.0.0.1",
			"cafile " + pki.CAFile, "certfile " + pki.CertFile, "keyfile " + pki.KeyFile},
		Output: newLogSink(t, "mosquitto"),
	})
	return &testBroker{target: targetMosquitto, addr: b.Addr, urls: map[rc.Transport]string{
		rc.TCP: rc.TCP.URL(b.Addr),
		rc.TLS: rc.TLS.URL(fmt.Sprintf("127.0.0.1:%d", b.Ports[0])),
	}}
}

// waitBrokerReady checks that the broker answers an MQTT 3.1.1 CONNECT with
// CONNACK, so a broken broker fails fast with one clear message instead of
// every peer timing out.
func waitBrokerReady(t *testing.T, b *testBroker) {
	t.Helper()
	if err := wait.Wait(10*time.Second, func() error { return probeConnect(b.addr) }); err != nil {
		t.Fatalf("%s broker at %s does not answer CONNECT: %v", b.target, b.addr, err)
	}
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

// eventually polls cond until it holds or d passes (internal/eventually).
func eventually(t *testing.T, d time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	wait.True(t, d, cond, format, args...)
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

// flagWasSet reports whether the flag name was given on the command line.
func flagWasSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
