package conformance

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/brokertest"
	wait "github.com/roost-mqtt/roost/internal/eventually"
	"github.com/roost-mqtt/roost/internal/mosquittotest"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	rc "github.com/roost-mqtt/roost/internal/rawclient"
)

const (
	targetRoost     = "roost"
	targetMosquitto = "mosquitto"
)

// target is the broker under test, from ROOST_CONFORMANCE_TARGET.
var target = targetRoost

func TestMain(m *testing.M) {
	flag.Parse()
	switch t := os.Getenv("ROOST_CONFORMANCE_TARGET"); t {
	case "", targetRoost:
	case targetMosquitto:
		target = t
		if _, err := mosquittotest.Path(); err != nil {
			fmt.Fprintln(os.Stderr, "conformance:", err)
			os.Exit(2)
		}
	default:
		fmt.Fprintf(os.Stderr, "conformance: unknown ROOST_CONFORMANCE_TARGET %q (want roost or mosquitto)\n", t)
		os.Exit(2)
	}
	// Most tests spend their time waiting on timers and sockets, not CPU;
	// run more of them at once than GOMAXPROCS unless told otherwise.
	if !flagWasSet("test.parallel") {
		_ = flag.Set("test.parallel", "16")
	}
	dir, err := os.MkdirTemp("", "roost-conformance-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "conformance:", err)
		os.Exit(2)
	}
	if pki, err = brokertest.NewPKI(dir); err != nil {
		fmt.Fprintln(os.Stderr, "conformance:", err)
		os.Exit(2)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// pki is the certificate authority of every test's mqtts:// and wss://
// listeners, which the clients trust (one for the whole run: making
// certificates per test would be the slowest part of a test).
var pki *brokertest.PKI

func flagWasSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// brokerConfig is the part of a broker's configuration that tests vary.
// Zero fields keep the target's defaults.
type brokerConfig struct {
	ConnectTimeout    time.Duration // Roost only: mosquitto has no such knob
	MaxPacketSize     uint32
	ReceiveMaximum    uint16
	TopicAliasMaximum uint16
}

// startBroker starts a fresh broker of the selected target for t, stopped
// when t ends, and returns the address of its listener for the transport
// of the forTransports (or forVersions) subtest that t runs in: a URL
// that dial takes, such as ws://127.0.0.1:40123/mqtt. It fails t if t
// runs under neither, since a test on one transport is half a test.
func startBroker(t *testing.T, cfg brokerConfig) string {
	t.Helper()
	tr, ok := transportOf(t)
	if !ok {
		t.Fatalf("startBroker: %s runs over no transport: wrap the test in forTransports or forVersions so that it runs over each", t.Name())
	}
	if target == targetMosquitto {
		return startMosquitto(t, cfg, tr)
	}
	return startRoost(t, cfg, tr)
}

// transports are the transports of the target: all of rawclient's for
// Roost; TCP and TLS for mosquitto 2.0.11, which has no PROXY protocol and
// whose WebSocket listeners close a connection they dropped only when the
// client next sends something (see NOTES.md), so that every test waiting
// for a close would time out.
func transports() []rc.Transport {
	if target == targetMosquitto {
		return []rc.Transport{rc.TCP, rc.TLS}
	}
	return rc.Transports()
}

// transportOf returns the transport of the forTransports subtest t runs in,
// from its name: TestX/ws/v4/... runs over WebSocket.
func transportOf(t testing.TB) (rc.Transport, bool) {
	for _, seg := range strings.Split(t.Name(), "/")[1:] {
		if slices.Contains(transports(), rc.Transport(seg)) {
			return rc.Transport(seg), true
		}
	}
	return "", false
}

// forTransports runs f as parallel subtests, one per transport (tcp, tls,
// ws, wss, proxy), named after it; startBroker in f serves that transport.
func forTransports(t *testing.T, f func(t *testing.T)) {
	t.Helper()
	for _, tr := range transports() {
		t.Run(string(tr), func(t *testing.T) {
			t.Parallel()
			f(t)
		})
	}
}

// syncBuffer collects a broker's log for printing when a test fails.
type syncBuffer struct{ mqtttest.LogBuffer }

// tail returns at most the last n bytes of the log.
func (s *syncBuffer) tail(n int) string {
	b := s.String()
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return b
}

const logTail = 16 << 10

// startRoost serves every transport (brokertest.StartAll) and returns the
// URL of tr's listener. When t ends it fails t if the log reports a panic,
// and prints the log's tail if t failed.
func startRoost(t *testing.T, cfg brokerConfig, tr rc.Transport) string {
	t.Helper()
	logs := &syncBuffer{}
	// Registered before StartAll's cleanup, so it runs after the shutdown
	// and sees everything the broker logged.
	t.Cleanup(func() {
		brokertest.FailOnPanic(t, logs.String())
		if t.Failed() {
			t.Logf("roost log (tail):\n%s", logs.tail(logTail))
		}
	})
	_, eps := brokertest.StartAll(t, broker.Options{
		Logger:            slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		ConnectTimeout:    cfg.ConnectTimeout,
		MaxPacketSize:     cfg.MaxPacketSize,
		ReceiveMaximum:    cfg.ReceiveMaximum,
		TopicAliasMaximum: cfg.TopicAliasMaximum,
	}, pki)
	return eps[tr]
}

// mosquittoConf is the configuration for cfg beyond mosquittotest's
// defaults.
func mosquittoConf(cfg brokerConfig) []string {
	lines := []string{"persistence false", "log_type all"}
	if cfg.TopicAliasMaximum != 0 {
		lines = append(lines, fmt.Sprintf("max_topic_alias %d", cfg.TopicAliasMaximum))
	}
	if cfg.MaxPacketSize != 0 {
		lines = append(lines, fmt.Sprintf("max_packet_size %d", cfg.MaxPacketSize))
	}
	if cfg.ReceiveMaximum != 0 {
		// mosquitto announces max_inflight_messages as its Receive Maximum.
		lines = append(lines, fmt.Sprintf("max_inflight_messages %d", cfg.ReceiveMaximum))
	}
	return lines
}

// startMosquitto starts mosquitto, with a TLS listener if tr is TLS, and
// returns tr's URL.
func startMosquitto(t *testing.T, cfg brokerConfig, tr rc.Transport) string {
	t.Helper()
	lines := mosquittoConf(cfg)
	if tr == rc.TLS {
		// Per-listener settings follow their listener line.
		lines = append(lines, "listener "+mosquittotest.PortToken+" 127.0.0.1",
			"cafile "+pki.CAFile, "certfile "+pki.CertFile, "keyfile "+pki.KeyFile)
	}
	b := mosquittotest.Start(t, lines...)
	if tr == rc.TLS {
		return tr.URL(fmt.Sprintf("127.0.0.1:%d", b.Ports[0]))
	}
	return tr.URL(b.Addr)
}

// eventually polls cond until it returns nil or within passes, then fails
// the test with cond's last error (internal/eventually).
func eventually(t testing.TB, within time.Duration, cond func() error) {
	t.Helper()
	wait.NoError(t, within, cond)
}

// forVersions runs f as parallel subtests "v4" (MQTT 3.1.1) and "v5" in
// each transport's subtest (forTransports): TestX/ws/v5.
func forVersions(t *testing.T, f func(t *testing.T, v byte)) {
	t.Helper()
	forTransports(t, func(t *testing.T) {
		for _, v := range []byte{4, 5} {
			t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
				t.Parallel()
				f(t, v)
			})
		}
	})
}

// mosquittoDeviates reports whether the target is mosquitto, which is
// known to depart from the specification as described by what (see
// NOTES.md), and logs the deviation. Tests use it to relax exactly that one
// check when validating against mosquitto; Roost always gets the strict
// check.
func mosquittoDeviates(t testing.TB, what string) bool {
	t.Helper()
	if target != targetMosquitto {
		return false
	}
	t.Logf("known mosquitto deviation: %s", what)
	return true
}

// skipIfMosquittoDeviates skips the test against mosquitto for a known
// deviation that leaves nothing else to check.
func skipIfMosquittoDeviates(t testing.TB, what string) {
	t.Helper()
	if target == targetMosquitto {
		t.Skipf("known mosquitto deviation: %s", what)
	}
}
