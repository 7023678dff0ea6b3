package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"runtime/pprof"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/roost-mqtt/roost/bench/load"
	"github.com/roost-mqtt/roost/packet"
)

const benchHelp = `Drives an MQTT broker (Roost or any other) with one load scenario and
reports what it measured: a progress line on stderr every second, a summary
table on stdout at the end, and with --json the full result as JSON.

Scenarios:
  fan-in       -P publishers -> 1 subscriber on a wildcard filter (default 8)
  fan-out      1 publisher -> -S subscribers on one topic (default 100)
  pairs        -N publisher/subscriber pairs on their own topics (default 50)
  latency      1 publisher at --rate msgs/s (default 1000) -> 1 subscriber
  connections  -C idle connections (default 1000), --batch at a time, held
               for --duration; with --pid, the broker's RSS per connection
  overload     -P publishers at --rate (default 100,000 msgs/s in all) ->
               1 subscriber reading --sub-rate msgs/s (default 1000); with
               --pid and --sys-dropped, the broker's memory and drops
  causality    arrival order across connections: a SUBSCRIBE, then --gaps
               later a PUBLISH to its topic on another connection, both
               idle for --idle; inversions (the PUBLISH routed first) per
               1,000 of --trials trials at each gap
  storm        -C persistent-session clients with a QoS 1 subscription
               each (default 1000); runs --stop-cmd and --start-cmd to
               restart the broker, publishes one message as soon as it is
               back, and times until every client is connected again with
               its session and has the message (bounded by --duration,
               default 2m)

Rates count the --duration after the --warmup. Latency is end to end, from
the write of a message to the read that brought it in. Each publisher keeps
at most --window messages outstanding: unacknowledged (QoS 1/2) and not yet
received by the subscribers (every QoS; --flat lets QoS 0 publishers send
as fast as the broker reads). See docs/bench.md.

Exit status: 0 success, 1 the run failed (the partial result is still
printed), 2 usage error.`

// benchFlags are roost bench's options.
type benchFlags struct {
	cfg      load.Config
	qos      int
	protocol int
	pid      string
	jsonFile string
	insecure bool
	caFile   string
	quiet    bool
	freePort bool
	gaps     string
	stopCmd  string
	startCmd string

	cpuProfile string
}

func (b *benchFlags) register(fs *flag.FlagSet) {
	c := &b.cfg
	fs.StringVar(&c.URL, "url", "mqtt://127.0.0.1:1883", "broker `URL`: mqtt://H:P, mqtts://H:P, ws://H:P/PATH or wss://H:P/PATH")
	fs.StringVar(&c.SubURL, "sub-url", "", "connect the subscribers to `URL` instead of --url (another node of a cluster)")
	fs.IntVar(&b.qos, "qos", 0, "QoS of publishes and subscriptions: 0, 1 or 2")
	fs.IntVar(&b.protocol, "protocol", 4, "MQTT protocol level: 4 (3.1.1) or 5")
	fs.IntVar(&c.Size, "size", 64, "payload size in `bytes` (at least 8: it carries the send time)")
	fs.DurationVar(&c.Duration, "duration", 10*time.Second, "how long to measure (connections: how long to hold them; default 5s there)")
	fs.DurationVar(&c.Warmup, "warmup", 2*time.Second, "load before measuring")
	fs.IntVar(&c.Window, "window", 0, "most messages outstanding per publisher (default 100 for QoS 1/2, 1000 for QoS 0)")
	fs.BoolVar(&c.Flat, "flat", false, "QoS 0 publishers send as fast as the broker reads, not paced by the subscribers")
	fs.IntVar(&c.Publishers, "P", 0, "publishers (fan-in, latency, overload)")
	fs.IntVar(&c.Subscribers, "S", 0, "subscribers (fan-out)")
	fs.IntVar(&c.Pairs, "N", 0, "publisher/subscriber pairs (pairs)")
	fs.IntVar(&c.Conns, "C", 0, "connections (connections)")
	fs.IntVar(&c.Batch, "batch", 0, "connections opened at once (connections; default 500)")
	fs.Float64Var(&c.Rate, "rate", 0, "total publish rate in `msgs/s`; 0 is as fast as the window allows (default 1000 for latency, 100000 for overload)")
	fs.Float64Var(&c.SubRate, "sub-rate", 0, "`msgs/s` the overload subscriber reads (default 1000)")
	fs.IntVar(&c.Trials, "trials", 0, "causality trials at each gap (default 500)")
	fs.StringVar(&b.gaps, "gaps", "", "causality: comma-separated `durations` between SUBSCRIBE and PUBLISH (default 50us,500us,2ms)")
	fs.DurationVar(&c.Idle, "idle", 0, "causality: how long both connections of a trial have been idle (default 300ms)")
	fs.DurationVar(&c.Quiet, "quiet", 0, "causality: how long the broker has had no traffic before a trial (default 10ms)")
	fs.StringVar(&b.pid, "pid", "", "broker process `id` for its RSS (from /proc), or auto: the process listening on the URL's port")
	fs.BoolVar(&c.SysDropped, "sys-dropped", false, "report the change of $SYS/broker/publish/messages/dropped (the broker's sys interval should be 1s)")
	fs.StringVar(&b.jsonFile, "json", "", "write the result as JSON to `file`")
	fs.BoolVar(&b.insecure, "insecure", false, "do not verify the server certificate (mqtts://, wss://)")
	fs.StringVar(&b.caFile, "cafile", "", "verify the server certificate with the CA certificates in `file`")
	fs.BoolVar(&b.quiet, "q", false, "no progress lines")
	fs.StringVar(&b.cpuProfile, "cpuprofile", "", "write a CPU profile of the load generator to `file` (is it the bottleneck?)")
	fs.BoolVar(&c.Persistent, "persistent", false, "subscribers keep their sessions (clean session 0; 5.0: session expiry never)")
	fs.BoolVar(&c.PersistentPublishers, "persistent-pub", false, "publishers keep their sessions too (a cluster's QoS 2 Origin path)")
	fs.StringVar(&b.stopCmd, "stop-cmd", "", "storm: shell `command` that stops the broker and returns once it has exited")
	fs.StringVar(&b.startCmd, "start-cmd", "", "storm: shell `command` that starts the broker and returns once it accepts connections")
	fs.BoolVar(&b.freePort, "free-port", false, "print a TCP port that is free on 127.0.0.1 and exit (for scripts)")
}

// parse parses args, which name the scenario before or after the flags.
func (b *benchFlags) parse(fs *flag.FlagSet, args []string) (code int, ok bool) {
	var scenario string
	for {
		if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
			return 0, false
		} else if err != nil {
			return 2, false
		}
		if fs.NArg() == 0 {
			break
		}
		if scenario != "" {
			fmt.Fprintf(fs.Output(), "roost bench: unexpected argument %q\n", fs.Arg(0))
			return 2, false
		}
		scenario, args = fs.Arg(0), fs.Args()[1:]
	}
	if b.freePort {
		return 0, true
	}
	if scenario == "" {
		fmt.Fprintf(fs.Output(), "roost bench: name a scenario: %s\n", scenarioList())
		return 2, false
	}
	b.cfg.Scenario = load.Scenario(scenario)
	if b.qos < 0 || b.qos > 2 || b.protocol < 0 || b.protocol > 255 {
		fmt.Fprintf(fs.Output(), "roost bench: --qos must be 0..2 and --protocol 4 or 5\n")
		return 2, false
	}
	b.cfg.QoS, b.cfg.Protocol = packet.QoS(b.qos), packet.Version(b.protocol)
	return 0, true
}

func scenarioList() string {
	var s []string
	for _, sc := range load.Scenarios() {
		s = append(s, string(sc))
	}
	return strings.Join(s, ", ")
}

func runBench(ctx context.Context, args []string, std stdio) int {
	stdout, stderr := std.out, std.err
	fs := newFlagSet("bench", " SCENARIO", benchHelp, stderr)
	var b benchFlags
	b.register(fs)
	if code, ok := b.parse(fs, args); !ok {
		return code
	}
	if b.freePort {
		return printFreePort(stdout, stderr)
	}
	if err := b.finish(stderr); err != nil {
		fmt.Fprintf(stderr, "roost bench: %v\n", err)
		return 2
	}
	if !b.quiet {
		b.cfg.Progress = func(p load.Progress) { fmt.Fprintln(stderr, progressLine(p)) }
	}
	if b.cpuProfile != "" {
		stop, err := startProfile(b.cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "roost bench: %v\n", err)
			return 1
		}
		defer stop()
	}
	res, err := load.Run(ctx, b.cfg)
	if errors.Is(err, load.ErrConfig) {
		fmt.Fprintf(stderr, "roost bench: %v\n", err)
		return 2
	}
	code := 0
	if res != nil {
		writeSummary(stdout, res)
		if b.jsonFile != "" {
			if jerr := writeJSON(b.jsonFile, res); jerr != nil {
				fmt.Fprintf(stderr, "roost bench: %v\n", jerr)
				code = 1
			}
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "roost bench: %v\n", err)
		code = 1
	}
	return code
}

// finish turns the TLS, --gaps and --pid flags into the configuration.
func (b *benchFlags) finish(stderr io.Writer) error {
	if b.gaps != "" {
		for _, f := range strings.Split(b.gaps, ",") {
			d, err := time.ParseDuration(strings.TrimSpace(f))
			if err != nil {
				return fmt.Errorf("--gaps: %w", err)
			}
			b.cfg.Gaps = append(b.cfg.Gaps, d)
		}
	}
	if b.insecure || b.caFile != "" {
		tc := &tls.Config{InsecureSkipVerify: b.insecure}
		if b.caFile != "" {
			pem, err := os.ReadFile(b.caFile)
			if err != nil {
				return err
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return fmt.Errorf("--cafile %s: no PEM certificates", b.caFile)
			}
		}
		b.cfg.TLS = tc
	}
	if b.stopCmd != "" {
		b.cfg.StopBroker = shellHook(b.stopCmd, stderr)
	}
	if b.startCmd != "" {
		b.cfg.StartBroker = shellHook(b.startCmd, stderr)
	}
	switch b.pid {
	case "":
	case "auto":
		pid, err := findBroker(b.cfg.URL)
		if err != nil {
			// Not fatal: the load still runs, only RSS is missing.
			fmt.Fprintf(stderr, "roost bench: --pid auto: %v; broker RSS not reported\n", err)
			return nil
		}
		b.cfg.PID = pid
	default:
		pid, err := strconv.Atoi(b.pid)
		if err != nil || pid <= 0 {
			return fmt.Errorf("--pid must be a process id or auto, got %q", b.pid)
		}
		if _, err := load.RSSKiB(pid); err != nil {
			return fmt.Errorf("--pid %d: %w", pid, err)
		}
		b.cfg.PID = pid
	}
	return nil
}

// shellHook runs command with sh -c, its output going to stderr.
func shellHook(command string, stderr io.Writer) func(context.Context) error {
	return func(ctx context.Context) error {
		cmd := exec.CommandContext(ctx, "sh", "-c", command)
		cmd.Stdout, cmd.Stderr = stderr, stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%q: %w", command, err)
		}
		return nil
	}
}

// findBroker finds the process listening on the port of rawURL.
func findBroker(rawURL string) (int, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return 0, err
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		return 0, fmt.Errorf("the URL %q names no port", rawURL)
	}
	return load.FindListener(port)
}

func printFreePort(stdout, stderr io.Writer) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintf(stderr, "roost bench: %v\n", err)
		return 1
	}
	defer ln.Close()
	fmt.Fprintln(stdout, ln.Addr().(*net.TCPAddr).Port)
	return 0
}

// startProfile starts a CPU profile into file and returns its stop.
func startProfile(file string) (stop func(), err error) {
	f, err := os.Create(file)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

func writeJSON(file string, res *load.Result) error {
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(file, append(b, '\n'), 0o644)
}

// progressLine is the once-a-second status line.
func progressLine(p load.Progress) string {
	s := fmt.Sprintf("%-11s %-7s %5.0fs", p.Scenario, p.Phase, p.Elapsed.Seconds())
	switch p.Scenario {
	case load.Connections, load.Storm:
		s += fmt.Sprintf("  conns %s", group(int64(p.Conns)))
	case load.Causality:
		s += fmt.Sprintf("  trials %s, in order %s", group(int64(p.Published)), group(int64(p.Delivered)))
	default:
		s += fmt.Sprintf("  pub %s msgs/s  sub %s msgs/s  (total %s / %s)",
			group(int64(p.PubRate)), group(int64(p.SubRate)), group(int64(p.Published)), group(int64(p.Delivered)))
	}
	if p.RSSKiB > 0 {
		s += fmt.Sprintf("  broker RSS %s KiB", group(p.RSSKiB))
	}
	return s
}

// writeSummary prints the result as a two-column table.
func writeSummary(w io.Writer, r *load.Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, a ...any) { fmt.Fprintf(tw, "%s\t%s\n", k, fmt.Sprintf(format, a...)) }
	row("scenario", "%s", describe(r))
	row("broker", "%s", r.URL)
	switch {
	case r.Storm != nil:
		summaryStorm(row, r.Storm)
	case r.Connections != nil:
		summaryConns(row, r, r.Connections)
	case r.Causality != nil:
		summaryCausality(row, r.Causality)
	default:
		summaryTraffic(row, r)
	}
	cpu := fmt.Sprintf("load %.2f cores", r.LoadCPU)
	if r.Broker != nil && r.Broker.PID > 0 {
		cpu += fmt.Sprintf(", broker %.2f cores", r.Broker.CPU)
	}
	row("CPU", "%s", cpu)
	if b := r.Broker; b != nil {
		if b.PID > 0 {
			row("broker RSS", "%s KiB before, %s KiB after, %s KiB max (pid %d)", group(b.RSSBeforeKiB), group(b.RSSAfterKiB), group(b.RSSMaxKiB), b.PID)
		}
		// Measured whenever the broker's RSS was read after the
		// connections (a growth of 0 is a result, not a missing one:
		// a broker whose freed memory took the 50 connections of a
		// test showed none).
		if r.Connections != nil && b.PID > 0 && b.RSSAfterKiB > 0 {
			row("RSS per conn", "%.2f KiB at the end, %.2f KiB %v after the last connection, %.2f KiB at the most",
				b.KiBPerConn, b.KiBPerConnSettled, load.Settle, b.KiBPerConnMax)
		}
		if b.Dropped != nil {
			row("broker drops", "%s ($SYS/broker/publish/messages/dropped)", group(*b.Dropped))
		}
	}
	for _, n := range r.Notes {
		row("note", "%s", n)
	}
	tw.Flush()
}

func describe(r *load.Result) string {
	v := "3.1.1"
	if r.Protocol == 5 {
		v = "5.0"
	}
	switch r.Scenario {
	case load.Connections:
		return fmt.Sprintf("connections, MQTT %s", v)
	case load.Causality:
		return fmt.Sprintf("causality, SUBSCRIBE then PUBLISH on another connection, MQTT %s", v)
	case load.Storm:
		return fmt.Sprintf("storm, %d persistent-session clients, broker restarted, MQTT %s", r.Storm.Clients, v)
	case load.FanOut:
		return fmt.Sprintf("fan-out, 1 publisher -> %d subscribers, QoS %d, %d B, MQTT %s", r.Subscribers, r.QoS, r.Size, v)
	case load.Pairs:
		return fmt.Sprintf("pairs, %d publisher/subscriber pairs, QoS %d, %d B, MQTT %s", r.Publishers, r.QoS, r.Size, v)
	}
	s := fmt.Sprintf("%s, %s -> 1 subscriber, QoS %d, %d B, MQTT %s", r.Scenario, plural(r.Publishers, "publisher"), r.QoS, r.Size, v)
	if r.Rate > 0 {
		s += fmt.Sprintf(", %s msgs/s", group(int64(r.Rate)))
	}
	if r.SubRate > 0 {
		s += fmt.Sprintf(", subscriber reads %s msgs/s", group(int64(r.SubRate)))
	}
	return s
}

func summaryTraffic(row func(k, format string, a ...any), r *load.Result) {
	pace := fmt.Sprintf("window %d", r.Window)
	if r.Flat {
		pace = "flat out"
	}
	row("measured", "%.2f s after %.2f s warm-up (%s)", r.Duration, r.Warmup, pace)
	row("published", "%s msgs/s (%s msgs)", group(int64(r.PublishRate)), group(int64(r.Published)))
	row("delivered", "%s msgs/s (%s msgs)", group(int64(r.DeliverRate)), group(int64(r.Delivered)))
	row("whole run", "%s published, %s of %s expected deliveries arrived, %s missing",
		group(int64(r.PublishedTotal)), group(int64(r.DeliveredTotal)), group(int64(r.ExpectedTotal)), group(r.Missing))
	if l := r.Latency; l != nil {
		row("latency", "p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (mean %s, %s msgs)",
			micros(l.P50), micros(l.P90), micros(l.P99), micros(l.P999), micros(l.Max), micros(l.Mean), group(int64(l.Count)))
	}
}

func summaryCausality(row func(k, format string, a ...any), c *load.CausalityStats) {
	row("trials", "%d pairs of connections, each idle %s before its trial, the broker quiet %s",
		c.Pairs, time.Duration(c.Idle*1e9), time.Duration(c.Quiet*1e9))
	for _, g := range c.Gaps {
		s := fmt.Sprintf("%.1f inversions per 1,000 (%d of %d; gap %.1f µs as achieved)", g.PerThousand, g.Inversions, g.Trials, g.GapMean)
		if l := g.Puback; l != nil {
			s += fmt.Sprintf("; wake-up to PUBACK p50 %s p99 %s", micros(l.P50), micros(l.P99))
		}
		row(fmt.Sprintf("gap %s", time.Duration(g.Gap*1e3)), "%s", s)
	}
}

func summaryConns(row func(k, format string, a ...any), r *load.Result, c *load.ConnStats) {
	row("connections", "%s opened of %s attempted (%s requested), %s failed",
		group(int64(c.Opened)), group(int64(c.Attempted)), group(int64(c.Requested)), group(int64(c.Failed)))
	row("connect rate", "%s conns/s (%.2f s)", group(int64(c.Rate)), c.Elapsed)
	row("held", "%.2f s", c.Held)
	if c.FirstError != "" {
		row("first error", "%s", c.FirstError)
	}
}

func summaryStorm(row func(k, format string, a ...any), s *load.StormStats) {
	at := func(sec float64) string {
		if sec == 0 {
			return "never (within --duration)"
		}
		return fmt.Sprintf("%.2f s", sec)
	}
	row("restart", "%.2f s (stop %.2f s, start %.2f s)", s.Restart, s.Stop, s.Start)
	row("published", "acknowledged at %s", at(s.Published))
	row("reconnected", "%s of %s, %s without their session; all at %s (%s attempts)",
		group(int64(s.Reconnected)), group(int64(s.Clients)), group(int64(s.SessionsLost)), at(s.AllConnected), group(s.Attempts))
	row("received", "%s of %s; all at %s", group(int64(s.Received)), group(int64(s.Clients)), at(s.AllReceived))
	if s.FirstError != "" {
		row("first error", "%s", s.FirstError)
	}
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// micros formats microseconds for a human: µs below 10 ms, ms above.
func micros(us float64) string {
	if us >= 10000 {
		return fmt.Sprintf("%.1f ms", us/1000)
	}
	return fmt.Sprintf("%.0f µs", us)
}

// group formats n with thousands separators.
func group(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
