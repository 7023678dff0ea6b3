package conformance

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/mosquittotest"
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
	os.Exit(m.Run())
}

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
// when t ends, and returns its 127.0.0.1 address.
func startBroker(t *testing.T, cfg brokerConfig) string {
	t.Helper()
	if target == targetMosquitto {
		return startMosquitto(t, cfg)
	}
	return startRoost(t, cfg)
}

// syncBuffer collects a broker's log for printing when a test fails.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// tail returns at most the last n bytes of the log.
func (s *syncBuffer) tail(n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.b.Bytes()
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

const logTail = 16 << 10

func startRoost(t *testing.T, cfg brokerConfig) string {
	t.Helper()
	logs := &syncBuffer{}
	srv, err := broker.New(broker.Options{
		Logger:            slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		SysInterval:       -1,
		ConnectTimeout:    cfg.ConnectTimeout,
		MaxPacketSize:     cfg.MaxPacketSize,
		ReceiveMaximum:    cfg.ReceiveMaximum,
		TopicAliasMaximum: cfg.TopicAliasMaximum,
	})
	if err != nil {
		t.Fatalf("broker.New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				served <- fmt.Errorf("Serve panicked: %v", r)
			}
		}()
		served <- srv.Serve(ln)
	}()
	t.Cleanup(func() {
		if err := stopRoost(srv, 5*time.Second); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		select {
		case err := <-served:
			if !errors.Is(err, broker.ErrServerClosed) {
				t.Errorf("Serve returned %v after Shutdown, want ErrServerClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Serve did not return within 5s of Shutdown")
		}
		if t.Failed() {
			t.Logf("roost log (tail):\n%s", logs.tail(logTail))
		}
	})
	return ln.Addr().String()
}

// stopRoost calls Shutdown, reporting a panic as an error so that the
// other tests still run.
func stopRoost(srv *broker.Server, within time.Duration) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("Shutdown panicked: %v", r)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	return srv.Shutdown(ctx)
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

func startMosquitto(t *testing.T, cfg brokerConfig) string {
	t.Helper()
	return mosquittotest.Start(t, mosquittoConf(cfg)...).Addr
}

// eventually polls cond every 20ms until it returns nil or within passes,
// then fails the test with cond's last error.
func eventually(t testing.TB, within time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %v", within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// forVersions runs f as parallel subtests "v4" (MQTT 3.1.1) and "v5".
func forVersions(t *testing.T, f func(t *testing.T, v byte)) {
	t.Helper()
	for _, v := range []byte{4, 5} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			t.Parallel()
			f(t, v)
		})
	}
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
