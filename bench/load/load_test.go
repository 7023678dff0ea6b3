package load

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/brokertest"
	"github.com/roost-mqtt/roost/packet"
	"github.com/roost-mqtt/roost/store"
)

// startBroker runs a broker on 127.0.0.1:0 for one test and returns its
// mqtt:// URL.
func startBroker(t *testing.T, opts broker.Options) string {
	t.Helper()
	_, addr := brokertest.Start(t, opts)
	return "mqtt://" + addr
}

// short is a configuration that finishes in well under a second.
func short(url string, sc Scenario) Config {
	return Config{URL: url, Scenario: sc, Warmup: 100 * time.Millisecond, Duration: 300 * time.Millisecond}
}

func run(t *testing.T, cfg Config) *Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("Run(%s): %v (result %+v)", cfg.Scenario, err, res)
	}
	return res
}

// checkTraffic checks the numbers every traffic scenario must get right
// against a healthy broker: something flowed, and nothing got lost.
func checkTraffic(t *testing.T, res *Result, fanout uint64) {
	t.Helper()
	if res.Published == 0 || res.Delivered == 0 || res.DeliverRate <= 0 {
		t.Errorf("%s: nothing measured: %+v", res.Scenario, res)
	}
	if res.ExpectedTotal != res.PublishedTotal*fanout {
		t.Errorf("%s: expected %d, want published %d x %d", res.Scenario, res.ExpectedTotal, res.PublishedTotal, fanout)
	}
	if res.Missing != 0 || res.DeliveredTotal != res.ExpectedTotal {
		t.Errorf("%s: delivered %d of %d (missing %d), notes %q", res.Scenario, res.DeliveredTotal, res.ExpectedTotal, res.Missing, res.Notes)
	}
	if res.Duration < 0.25 || res.Duration > 3 {
		t.Errorf("%s: measured %.3fs, want about its Duration (0.3s, 1.5s for big payloads)", res.Scenario, res.Duration)
	}
	if l := res.Latency; l == nil || l.Count == 0 || l.P50 <= 0 || l.P50 > l.P99 || l.P99 > l.Max || l.Max > 5e6 {
		t.Errorf("%s: latency %+v", res.Scenario, res.Latency)
	}
}

func TestScenarios(t *testing.T) {
	// Serial: each scenario must measure something within a window of
	// 0.3 s, which tests beside it could starve (fan-in measured nothing
	// in a suite run at -p 3 while it ran in parallel).
	url := startBroker(t, broker.Options{})
	tests := []struct {
		name   string
		cfg    func(Config) Config
		fanout uint64
	}{
		{"fan-in", func(c Config) Config { c.Scenario, c.Publishers = FanIn, 3; return c }, 1},
		{"fan-in qos1 mqtt5", func(c Config) Config { c.Scenario, c.Publishers, c.QoS, c.Protocol = FanIn, 2, 1, packet.V5; return c }, 1},
		{"fan-out", func(c Config) Config { c.Scenario, c.Subscribers = FanOut, 5; return c }, 5},
		{"pairs qos1", func(c Config) Config { c.Scenario, c.Pairs, c.QoS = Pairs, 4, 1; return c }, 1},
		{"pairs qos2", func(c Config) Config { c.Scenario, c.Pairs, c.QoS, c.Window = Pairs, 2, 2, 10; return c }, 1},
		{"pairs qos2 mqtt5", func(c Config) Config { c.Scenario, c.Pairs, c.QoS, c.Protocol = Pairs, 2, 2, packet.V5; return c }, 1},
		{"latency", func(c Config) Config { c.Scenario, c.Rate = Latency, 2000; return c }, 1},
		// 1.5 s: in 0.3 s no 200 KiB message completed at load 20.
		{"big payload", func(c Config) Config {
			c.Scenario, c.Pairs, c.Size, c.Duration = Pairs, 1, 200<<10, 1500*time.Millisecond
			return c
		}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := run(t, tt.cfg(short(url, "")))
			checkTraffic(t, res, tt.fanout)
		})
	}
}

// A fixed rate is kept: about Rate messages per second are published.
func TestLatencyRate(t *testing.T) {
	// Serial: it checks a rate, which tests beside it would slow.
	url := startBroker(t, broker.Options{})
	cfg := short(url, Latency)
	cfg.Rate, cfg.Duration = 1000, 500*time.Millisecond
	res := run(t, cfg)
	checkTraffic(t, res, 1)
	if res.PublishRate < 800 || res.PublishRate > 1200 {
		t.Errorf("published %.0f msgs/s, want about 1000", res.PublishRate)
	}
}

// Flat QoS 0 publishers are not paced, and the totals still add up.
func TestFlat(t *testing.T) {
	t.Parallel()
	url := startBroker(t, broker.Options{})
	cfg := short(url, FanIn)
	cfg.Publishers, cfg.Flat = 2, true
	res := run(t, cfg)
	// A flat-out writer may sit in one blocked write for the whole short
	// interval (the race detector slows the broker), so check the totals.
	if res.PublishedTotal == 0 || res.DeliveredTotal == 0 {
		t.Fatalf("nothing flowed: %+v", res)
	}
	if res.Missing != int64(res.ExpectedTotal)-int64(res.DeliveredTotal) || res.Missing < 0 {
		t.Errorf("missing %d, expected %d, delivered %d", res.Missing, res.ExpectedTotal, res.DeliveredTotal)
	}
}

// The slow subscriber reads about SubRate messages per second, the rest is
// missing (dropped or still queued), and the broker's $SYS drop count and
// RSS are read. Whether a broker drops or queues is its own policy, so the
// count is only checked for sanity.
func TestOverload(t *testing.T) {
	// Serial: it checks a rate, and reads the RSS of the whole process.
	url := startBroker(t, broker.Options{SysInterval: 100 * time.Millisecond})
	cfg := short(url, Overload)
	cfg.Publishers, cfg.Rate, cfg.SubRate, cfg.Size = 2, 20000, 500, 1024
	cfg.Duration, cfg.PID, cfg.SysDropped = time.Second, os.Getpid(), true
	res := run(t, cfg)
	if res.DeliveredTotal >= res.PublishedTotal || res.Missing <= 0 {
		t.Errorf("the slow subscriber got %d of %d", res.DeliveredTotal, res.PublishedTotal)
	}
	if res.DeliverRate < 250 || res.DeliverRate > 1000 {
		t.Errorf("the slow subscriber read %.0f msgs/s, want about 500", res.DeliverRate)
	}
	b := res.Broker
	if b == nil || b.Dropped == nil || b.RSSMaxKiB <= 0 {
		t.Fatalf("broker stats %+v, want $SYS drops and RSS", b)
	}
	if *b.Dropped < 0 || *b.Dropped > res.Missing {
		t.Errorf("broker dropped %d, but %d are missing", *b.Dropped, res.Missing)
	}
}

func TestConnections(t *testing.T) {
	// Serial: it reads the RSS of the whole process, which tests beside it
	// would move.
	url := startBroker(t, broker.Options{})
	cfg := short(url, Connections)
	cfg.Conns, cfg.Batch, cfg.PID = 120, 50, os.Getpid()
	cfg.Duration = Settle + 200*time.Millisecond // long enough for the settled sample
	res := run(t, cfg)
	st := res.Connections
	if st == nil || st.Opened != 120 || st.Failed != 0 || st.Rate <= 0 || len(st.Steps) != 3 {
		t.Fatalf("connections %+v", st)
	}
	if b := res.Broker; b == nil || b.RSSBeforeKiB <= 0 || b.RSSAfterKiB <= 0 || b.RSSSettledKiB <= 0 ||
		b.RSSMaxKiB < b.RSSSettledKiB || b.KiBPerConnSettled == 0 || b.KiBPerConnMax < b.KiBPerConnSettled {
		t.Errorf("broker %+v", b)
	}
	if st.Held < Settle.Seconds() {
		t.Errorf("held %.2f s, want at least %v", st.Held, Settle)
	}
}

// The open-file limit caps the count, and the result says so.
func TestConnectionsCapped(t *testing.T) {
	// Serial: it counts the open files of the whole process.
	url := startBroker(t, broker.Options{})
	cfg := short(url, Connections)
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	cfg.Conns, cfg.FDLimit = 500, len(fds)+fdReserve+40 // room for about 40
	res := run(t, cfg)
	st := res.Connections
	if st.Attempted > 45 || st.Attempted < 30 || st.Opened != st.Attempted {
		t.Errorf("attempted %d, opened %d; want about 40", st.Attempted, st.Opened)
	}
	if len(res.Notes) == 0 || !strings.Contains(res.Notes[0], "capped at") {
		t.Errorf("notes %q", res.Notes)
	}
}

// Cancelling the context ends a run early with the context's error.
func TestCancel(t *testing.T) {
	t.Parallel()
	url := startBroker(t, broker.Options{})
	cfg := short(url, FanIn)
	cfg.Duration = time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	res, err := Run(ctx, cfg)
	if !errors.Is(err, context.DeadlineExceeded) || res == nil {
		t.Fatalf("Run: %v, %v", res, err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("took %v to stop", el)
	}
}

// A broker that is not there fails the run quickly with a dial error.
func TestNoBroker(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, err = Run(context.Background(), short("mqtt://"+addr, Pairs))
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("Run: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []Config{
		{Scenario: "nope"},
		{Scenario: FanIn, Size: 4},
		{Scenario: FanIn, QoS: 3},
		{Scenario: FanIn, Protocol: 3},
		{Scenario: FanIn, Window: 40000},
		{Scenario: FanIn, URL: "ftp://x"},
	} {
		if _, err := Run(context.Background(), c); !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: %v, want ErrConfig", c, err)
		}
	}
}

func ptrVal(b *BrokerStats) any {
	if b == nil || b.Dropped == nil {
		return nil
	}
	return *b.Dropped
}

// restartable is a broker on a fixed address that a Storm run can stop and
// start again; with keep, the new broker gets the old one's store (Roost
// keeps persistent sessions across a restart), without it an empty one.
type restartable struct {
	t    *testing.T
	addr string
	keep bool
	st   *store.Memory
	srv  *broker.Server
	done chan error
	// starts counts StartBroker calls.
	starts int
}

func newRestartable(t *testing.T, keep bool) *restartable {
	b := &restartable{t: t, addr: "127.0.0.1:0", keep: keep, st: store.NewMemory()}
	if err := b.start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.stop(context.Background()) })
	return b
}

func (b *restartable) start(ctx context.Context) error {
	if !b.keep && b.starts > 0 {
		b.st = store.NewMemory()
	}
	s, err := broker.New(broker.Options{Logger: slog.New(slog.DiscardHandler), SysInterval: -1, Store: b.st})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", b.addr)
	if err != nil {
		return err
	}
	b.addr = ln.Addr().String()
	b.srv, b.done = s, make(chan error, 1)
	go func() { b.done <- s.Serve(ln) }()
	b.starts++
	return nil
}

func (b *restartable) stop(ctx context.Context) error {
	if b.srv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	b.srv.Shutdown(ctx)
	<-b.done
	b.srv = nil
	return nil
}

func stormConfig(b *restartable, n int) Config {
	return Config{URL: "mqtt://" + b.addr, Scenario: Storm, Conns: n, Duration: 20 * time.Second,
		StopBroker: b.stop, StartBroker: b.start}
}

func TestStorm(t *testing.T) {
	t.Parallel()
	for _, v := range []packet.Version{packet.V311, packet.V5} {
		t.Run(v.String(), func(t *testing.T) {
			b := newRestartable(t, true)
			cfg := stormConfig(b, 50)
			cfg.Protocol = v
			res := run(t, cfg)
			s := res.Storm
			if s == nil || b.starts != 2 {
				t.Fatalf("storm result %+v after %d starts", s, b.starts)
			}
			if s.Clients != 50 || s.Reconnected != 50 || s.SessionsLost != 0 || s.Received != 50 {
				t.Errorf("storm %+v, want all 50 back with their sessions and the message; notes %q", s, res.Notes)
			}
			// (A subscriber may get the message before the publisher
			// reads its PUBACK: no order between the two.)
			if s.Restart <= 0 || s.Restart < s.Stop || s.Published < s.Stop ||
				s.AllConnected < s.Stop || s.AllReceived < s.Stop || s.AllReceived > 20 || s.Attempts < 51 {
				t.Errorf("storm times %+v", s)
			}
			if len(res.Notes) != 0 {
				t.Errorf("notes %q", res.Notes)
			}
		})
	}
}

// A broker that forgets the sessions across the restart is reported, not
// waited for.
func TestStormSessionsLost(t *testing.T) {
	t.Parallel()
	b := newRestartable(t, false)
	res := run(t, stormConfig(b, 20))
	s := res.Storm
	if s.Reconnected != 20 || s.SessionsLost != 20 || s.Received != 0 || s.AllReceived != 0 {
		t.Errorf("storm %+v, want 20 back without their sessions and no message", s)
	}
	if len(res.Notes) != 1 || !strings.Contains(res.Notes[0], "20 of 20 clients did not receive") {
		t.Errorf("notes %q", res.Notes)
	}
}

func TestStormNeedsRestartHooks(t *testing.T) {
	t.Parallel()
	_, err := Run(context.Background(), Config{Scenario: Storm})
	if !errors.Is(err, ErrConfig) {
		t.Fatalf("Run without hooks: %v, want ErrConfig", err)
	}
}

// The drain waits in proportion to the slowest delivery: a loaded machine
// that takes 5.5 s per big message must not have its messages counted as
// missing after a fixed 5 s, and a stopped broker must still end the run.
func TestDrainBounds(t *testing.T) {
	tests := []struct {
		scenario     Scenario
		slowest      time.Duration
		stall, total time.Duration
	}{
		{Pairs, 0, drainStall, 5 * time.Second},
		{Pairs, 100 * time.Millisecond, drainStall, 5 * time.Second},
		{Pairs, 5500 * time.Millisecond, 11 * time.Second, 16500 * time.Millisecond},
		{FanIn, time.Hour, drainCap, drainCap},
		{Overload, 20 * time.Second, drainStall, time.Second},
	}
	for _, tt := range tests {
		r := &runner{cfg: Config{Scenario: tt.scenario}}
		stall, total := r.drainBounds(tt.slowest)
		if stall != tt.stall || total != tt.total {
			t.Errorf("%s, slowest %v: stall %v total %v, want %v and %v", tt.scenario, tt.slowest, stall, total, tt.stall, tt.total)
		}
	}
}
