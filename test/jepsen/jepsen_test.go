package jepsen

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/brokertest"
	"github.com/roost-mqtt/roost/internal/clustertest"
	"github.com/roost-mqtt/roost/internal/netfault"
)

var (
	duration = flag.Duration("jepsen.duration", 0, "workload time of each run (0: the test's default, 60 s single node)")
	seedFlag = flag.Uint64("jepsen.seed", 0, "seed of the first run (0: from the clock; printed)")
	runs     = flag.Int("jepsen.runs", 1, "runs in a row, seeds seed, seed+1, ...")
	outDir   = flag.String("jepsen.out", os.TempDir(), "where a failed run's directory (history, node logs and data) is kept")
	verbose  = flag.Bool("jepsen.v", false, "log the run's progress")
	full     = flag.Bool("jepsen.cluster-full", false, "run TestClusterFull: every fault on every node of three")
	rate     = flag.Float64("jepsen.rate", 0, "messages per second per publisher (0: the default, 20)")
	every    = flag.Duration("jepsen.fault-every", 0, "longest quiet time between faults (0: the default, 5 s); the shortest is a tenth of it, at least 200 ms")
	ppubs    = flag.Int("jepsen.persistent-publishers", -1, "how many publishers keep a session (-1: the test's default)")
	recheck  = flag.String("jepsen.check", "", "TestRecheck: check this history.json again (a failed run's) and print the result")
	explain  = flag.String("jepsen.explain", "", "TestRecheck: SUB:OP, set out what the history says about operation OP and subscriber (or group) SUB, with wall-clock times for the node logs")
	faults   = flag.String("jepsen.faults", "", "TestClusterFull's faults, comma-separated (kill,pause,isolate; \"none\": none; default all)")
	long     = flag.Float64("jepsen.long-faults", -1, "TestClusterFull's share of faults lasting 5-15 s (-1: the default, 0.25; 0: none)")
	nodeLog  = flag.String("jepsen.node-log-level", "", "the nodes' --log-level (\"\": roost's default, info); debug says what a trace needs, about 20 MB per node and half hour")
)

func TestMain(m *testing.M) { clustertest.Main(m) }

// flagsEnv carries the -jepsen.* flags into a test re-executed inside a
// network namespace (netfault.Namespace passes the environment, not the
// command line).
const flagsEnv = "ROOST_JEPSEN_FLAGS"

// namespaceEnv is the environment for a re-executed test: the flags set
// here and the roost binary, so that the child does not build it again.
func namespaceEnv(t *testing.T) []string {
	var set []string
	flag.Visit(func(f *flag.Flag) {
		if strings.HasPrefix(f.Name, "jepsen.") {
			set = append(set, "-"+f.Name+"="+f.Value.String())
		}
	})
	return []string{flagsEnv + "=" + strings.Join(set, " "), clustertest.BinEnv + "=" + clustertest.Binary(t, raceEnabled)}
}

// applyFlagsEnv sets the flags the parent passed in flagsEnv.
func applyFlagsEnv(t *testing.T) {
	for _, a := range strings.Fields(os.Getenv(flagsEnv)) {
		name, value, _ := strings.Cut(strings.TrimPrefix(a, "-"), "=")
		if err := flag.Set(name, value); err != nil {
			t.Fatalf("%s: %v", flagsEnv, err)
		}
	}
}

// brokerConfig lets queues hold everything published while a subscriber
// is away (a message dropped by the queue policy would look lost) and
// turns $SYS off (its retained topics are not the checker's).
const brokerConfig = "limits: {max_queued: 1000000}\nsys_interval: off\n"

// scenario is one kind of run.
type scenario struct {
	nodes    int
	duration time.Duration
	extra    []string      // roost serve arguments
	yaml     string        // more of the nodes' configuration file
	net      *netfault.Net // inside a namespace: Isolate faults possible
	config   func(seed uint64) Config
}

// runScenario runs sc once per seed and fails t on any violation. A
// run's directory (node data and logs) is removed when it passes; when it
// fails, the history is written there (history.json; linearizability.html
// when the retained check failed) and the directory is kept under
// -jepsen.out.
func runScenario(t *testing.T, sc scenario) {
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	for i := range *runs {
		res, o := execute(t, sc, seed+uint64(i))
		if res != nil && res.Violations() > 0 {
			o.fail("%d violations", res.Violations())
		}
		if !o.finish() {
			return
		}
	}
}

// outcome is what a run left to decide: its directory and history, and
// whether it failed.
type outcome struct {
	t      *testing.T
	seed   uint64
	dir    string
	h      *History
	res    *Result
	failed bool
}

func (o *outcome) fail(format string, args ...any) {
	o.t.Helper()
	o.failed = true
	o.t.Errorf("seed %d: "+format, append([]any{o.seed}, args...)...)
}

// finish keeps the run's directory, with the history, if it failed and
// removes it otherwise; it reports whether the run passed.
func (o *outcome) finish() bool {
	if !o.failed {
		os.RemoveAll(o.dir)
		return true
	}
	if o.h != nil {
		if err := o.h.WriteFile(filepath.Join(o.dir, "history.json")); err != nil {
			o.t.Error(err)
		}
		if o.res != nil && o.res.Linearizable == "illegal" {
			if err := WriteLinearizability(o.h, filepath.Join(o.dir, "linearizability.html")); err != nil {
				o.t.Error(err)
			}
		}
	}
	o.t.Logf("seed %d: history, node logs and data kept in %s", o.seed, o.dir)
	return false
}

// execute runs sc with seed and checks the history. Failures of the run
// itself (a node that did not start, a panic or data race in a node's
// log) are recorded in the outcome; what to make of the checker's result
// is the caller's.
func execute(t *testing.T, sc scenario, seed uint64) (*Result, *outcome) {
	t.Helper()
	dir, err := os.MkdirTemp(*outDir, fmt.Sprintf("roost-jepsen-%s-%d-", strings.ReplaceAll(t.Name(), "/", "_"), seed))
	if err != nil {
		t.Fatal(err)
	}
	o := &outcome{t: t, seed: seed, dir: dir}
	cfgPath := filepath.Join(dir, "roost.yaml")
	if err := writeAtomic(cfgPath, []byte(brokerConfig+sc.yaml)); err != nil {
		t.Fatal(err)
	}
	cfg := sc.config(seed)
	cfg.Duration = sc.duration
	if *rate > 0 {
		cfg.Rate = *rate
	}
	if *ppubs >= 0 {
		cfg.PersistentPublishers = *ppubs
	}
	if *every > 0 {
		cfg.FaultEvery = Span{max(*every/10, 200*time.Millisecond), *every}
	}
	if *duration > 0 {
		cfg.Duration = *duration
	}
	if *verbose {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	// The whole run is bounded: setup, workload, heal, drain, and the
	// nodes' starts, each with its own bound, well inside this.
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Duration+cfg.Setup+drainCap*cfg.Drain+5*time.Minute)
	defer cancel()
	t.Logf("seed %d: %d node(s) %v, %v, faults %v on nodes %v (nil: all), sessions on %v (nil: all)", seed, sc.nodes,
		sc.extra, cfg.Duration, cfg.Faults, cfg.FaultNodes, cfg.SessionNodes)
	extra := sc.extra
	if *nodeLog != "" {
		extra = append(slices.Clone(extra), "--log-level", *nodeLog)
	}
	procs, err := StartProcs(ctx, clustertest.Binary(t, raceEnabled), dir, cfgPath, sc.nodes, extra...)
	if err != nil {
		o.fail("%v", err)
		return nil, o
	}
	var nodes Nodes = procs
	if sc.net != nil {
		nodes = Partitioned{procs, sc.net}
	}
	h, runErr := Run(ctx, cfg, nodes)
	o.h = h
	if runErr != nil {
		o.fail("run: %v", runErr)
	}
	if err := procs.Stop(); err != nil {
		o.fail("%v", err)
	}
	for _, l := range procs.Logs() {
		b, err := os.ReadFile(l)
		if err != nil {
			o.fail("%v", err)
			continue
		}
		if p := brokertest.PanicLines(string(b)); len(p) > 0 {
			o.fail("%s reports a panic: %s", filepath.Base(l), p[0])
		}
		if strings.Contains(string(b), "WARNING: DATA RACE") {
			o.fail("%s reports a data race", filepath.Base(l))
		}
	}
	if h == nil {
		return nil, o
	}
	o.res = Check(h)
	t.Logf("seed %d:\n%s", seed, o.res)
	return o.res, o
}

func writeAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// TestSingleNode is the short run of the suite against one roost serve
// (default durable store: a sync before every acknowledgement) killed
// with SIGKILL and restarted, and paused with SIGSTOP, at random.
//
//	go test ./test/jepsen -run TestSingleNode                   # 60 s of faults, under 2 min in all
//	go test ./test/jepsen -run TestSingleNode -timeout 0 \
//	    -jepsen.duration 30m -jepsen.runs 3 -jepsen.seed 1      # the long run
func TestSingleNode(t *testing.T) {
	if testing.Short() {
		t.Skip("a minute of faults against a real broker")
	}
	t.Parallel() // with TestCluster and TestCheckerSeesLosses: each is light, and the suite waits for the longest only
	// One of the publishers is persistent (NewConfig): it resends what a
	// kill left unacknowledged, which is how a QoS 2 packet id kept
	// without its deliveries was found (store's
	// TestCrashBetweenQoS2IDAndDeliveries).
	runScenario(t, scenario{nodes: 1, duration: 60 * time.Second, config: NewConfig})
}

// TestCheckerSeesLosses is the checker's control: the same run against a
// node that keeps everything in memory (--memory), killed twice or more.
// Every kill loses the sessions, their queues and the retained messages,
// and the checker must say so.
func TestCheckerSeesLosses(t *testing.T) {
	if testing.Short() {
		t.Skip("kills a real broker")
	}
	t.Parallel()
	res, o := execute(t, scenario{nodes: 1, duration: 12 * time.Second, extra: []string{"--memory"},
		config: func(seed uint64) Config {
			cfg := NewConfig(seed)
			cfg.Faults = []Fault{Kill}
			// Room after each restart for reads of a retained topic
			// before anyone writes it again.
			cfg.FaultEvery, cfg.FaultFor, cfg.WriteRate = Span{3 * time.Second, 4 * time.Second}, Span{200 * time.Millisecond, 500 * time.Millisecond}, 0.5
			cfg.Drain = 3 * time.Second // what is lost never comes
			return cfg
		}}, uint64(time.Now().UnixNano()))
	if res != nil {
		// Every kill loses every session, and the checker must see
		// that. Messages it sees lost only when a kill caught some on
		// their way or queued for a subscriber that was away: the
		// subscribers reconnect and subscribe again at once, so on a
		// quiet machine a run may lose none (a fresh-clone suite run:
		// 18 sessions lost, 0 messages). check_test.go holds the
		// checker to each kind of loss.
		if res.SessionsLost == 0 {
			o.fail("a broker that forgets everything at each kill: %d sessions lost (%d messages)", res.SessionsLost, res.Lost)
		}
		// Only a read after a kill can see a retained message
		// forgotten: a fresh clone at load restarted the node so late
		// that the run's reads all came before its one kill (session 27).
		if res.ReadsAfterFault > 0 && res.Linearizable != "illegal" {
			o.fail("retained messages forgotten at each kill, yet the registers are %q (%d reads after the first kill)", res.Linearizable, res.ReadsAfterFault)
		}
	}
	o.finish()
}

// clusterScenario is a three-node run inside a network namespace (so the
// nemesis can isolate nodes too), with cfg's faults and placement.
func clusterScenario(t *testing.T, d time.Duration, yaml string, adjust func(*Config)) {
	n := netfault.Namespace(t, namespaceEnv(t)...)
	if n == nil {
		return // it ran inside its namespace
	}
	applyFlagsEnv(t)
	runScenario(t, scenario{nodes: 3, duration: d, net: n, yaml: yaml, config: func(seed uint64) Config {
		cfg := NewConfig(seed)
		cfg.Faults = []Fault{Kill, Pause, Isolate}
		// A cluster node takes seconds to start under -race on two
		// loaded cores; and a killed node's sessions take the cluster's
		// ownership records time to move.
		cfg.Setup, cfg.Drain = 60*time.Second, 60*time.Second
		adjust(&cfg)
		return cfg
	}})
}

// TestCluster is the cluster run of the suite, with the workload and the
// faults the cluster passes every time: every persistent session and
// shared group member lives on node 0 and reconnects there only (with
// sessions and faults on every node, TestClusterFull, some seeds still
// lose or double a message, mostly a share group's: bench/jepsen/RESULTS.md);
// publishers and clean subscribers use every node and reconnect to a
// random one every few seconds; the nemesis kills, pauses
// and isolates node 2 only. Publishers start clean: a persistent one
// whose node is killed between recording a QoS 2 packet id and
// forwarding the message to every other node gets PUBREC for its resent
// PUBLISH and the message never reaches the other nodes' subscribers
// (found by this checker). Retained registers are written and read on
// every node: a subscription's node brings its retained messages up to
// date with the stream first (cluster.SyncRetained), which this checker
// found missing. The nodes' forward_timeout is 15 s, longer than the
// publishers' 5 s: a QoS 1/2 publish that a node cannot confirm in time
// (its persistent sessions' stream electing a leader after a fault) is
// given up by its publisher (unknown: it may or may not be delivered)
// before the node answers 0x80. With the default 5 s the node answers
// 0x80 and may deliver the message later anyway (the retried ops reach
// the stream): a refusal that is not one, which TestClusterFull shows
// (bench/jepsen/RESULTS.md), with the rest.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("three real nodes under faults")
	}
	t.Parallel()
	clusterScenario(t, 30*time.Second, "cluster: {forward_timeout: 15s}\n", func(cfg *Config) {
		cfg.SessionNodes, cfg.FaultNodes = []int{0}, []int{2}
		cfg.PersistentPublishers = 0
	})
}

// TestClusterFull is the run issue 17 asks for: three nodes, every fault
// (kill -9, SIGSTOP, isolation) on every node, persistent sessions and
// group members on every node. It does not pass every seed yet
// (bench/jepsen/RESULTS.md), so it runs only when asked for.
//
//	go test ./test/jepsen -run TestClusterFull -jepsen.cluster-full -timeout 0 [-jepsen.duration 30m]
func TestClusterFull(t *testing.T) {
	if !*full && !strings.Contains(os.Getenv(flagsEnv), "cluster-full") {
		t.Skip("does not pass every seed yet; -jepsen.cluster-full runs it")
	}
	clusterScenario(t, 60*time.Second, "", func(cfg *Config) {
		// A quarter of the faults outlast the heartbeat timeout (4 s)
		// and often adopt_after (10 s): the others hold for the node,
		// and adopt its sessions.
		cfg.LongFaults, cfg.LongFaultFor = 0.25, Span{5 * time.Second, 15 * time.Second}
		if *long >= 0 {
			cfg.LongFaults = *long
		}
		switch *faults {
		case "":
		case "none":
			cfg.Faults = nil
		default:
			cfg.Faults = nil
			for _, f := range strings.Split(*faults, ",") {
				cfg.Faults = append(cfg.Faults, Fault(f))
			}
		}
	})
}

// TestRecheck checks a kept history again, for debugging:
//
//	go test ./test/jepsen -run TestRecheck -jepsen.check /tmp/roost-jepsen-.../history.json -v
//	go test ./test/jepsen -run TestRecheck -jepsen.check .../history.json -jepsen.explain ps1:779 -v
func TestRecheck(t *testing.T) {
	if *recheck == "" {
		t.Skip("-jepsen.check names no history")
	}
	h, err := ReadHistory(*recheck)
	if err != nil {
		t.Fatal(err)
	}
	if *explain == "" {
		t.Logf("seed %d, %d node(s):\n%s", h.Seed, h.Nodes, Check(h))
		return
	}
	who, opText, _ := strings.Cut(*explain, ":")
	op, err := strconv.Atoi(opText)
	if err != nil {
		t.Fatalf("-jepsen.explain %q: want SUB:OP", *explain)
	}
	out, err := Explain(h, who, op, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("seed %d:\n%s", h.Seed, out)
}
