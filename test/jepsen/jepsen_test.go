package jepsen

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/brokertest"
)

var (
	duration = flag.Duration("jepsen.duration", 0, "workload time of each run (0: the test's default, 60 s single node)")
	seedFlag = flag.Uint64("jepsen.seed", 0, "seed of the first run (0: from the clock; printed)")
	runs     = flag.Int("jepsen.runs", 1, "runs in a row, seeds seed, seed+1, ...")
	outDir   = flag.String("jepsen.out", os.TempDir(), "where a failed run's directory (history, node logs and data) is kept")
	verbose  = flag.Bool("jepsen.v", false, "log the run's progress")
	full     = flag.Bool("jepsen.cluster-full", false, "run TestClusterFull: every fault on every node of three")
)

// bin is the roost binary under test.
var bin string

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "roost-jepsen-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "roost")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "github.com/roost-mqtt/roost/cmd/roost")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building roost:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// brokerConfig lets queues hold everything published while a subscriber
// is away (a message dropped by the queue policy would look lost) and
// turns $SYS off (its retained topics are not the checker's).
const brokerConfig = "limits: {max_queued: 1000000}\nsys_interval: off\n"

// scenario is one kind of run.
type scenario struct {
	nodes    int
	duration time.Duration
	config   func(seed uint64) Config
}

// runScenario runs sc once per seed. A run's directory (node data and
// logs) is removed when it passes; when it fails, the history is written
// there (history.json; linearizability.html when the retained check
// failed) and the directory is kept under -jepsen.out.
func runScenario(t *testing.T, sc scenario) {
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	for i := range *runs {
		if !runOnce(t, sc, seed+uint64(i)) {
			return
		}
	}
}

func runOnce(t *testing.T, sc scenario, seed uint64) bool {
	t.Helper()
	dir, err := os.MkdirTemp(*outDir, fmt.Sprintf("roost-jepsen-%s-%d-", strings.ReplaceAll(t.Name(), "/", "_"), seed))
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "roost.yaml")
	if err := writeAtomic(cfgPath, []byte(brokerConfig)); err != nil {
		t.Fatal(err)
	}
	cfg := sc.config(seed)
	cfg.Duration = sc.duration
	if *duration > 0 {
		cfg.Duration = *duration
	}
	if *verbose {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	// The whole run is bounded: setup, workload, heal, drain, and the
	// nodes' starts, each with its own bound, well inside this.
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Duration+cfg.Setup+cfg.Drain+5*time.Minute)
	defer cancel()
	t.Logf("seed %d: %d node(s), %v, faults %v on nodes %v, sessions on %v", seed, sc.nodes, cfg.Duration,
		cfg.Faults, cfg.FaultNodes, cfg.SessionNodes)
	nodes, err := StartProcs(ctx, bin, dir, cfgPath, sc.nodes)
	if err != nil {
		t.Fatalf("seed %d: %v (kept %s)", seed, err, dir)
	}
	h, runErr := Run(ctx, cfg, nodes)
	stopErr := nodes.Stop()
	failed := false
	fail := func(format string, args ...any) {
		failed = true
		t.Errorf("seed %d: "+format, append([]any{seed}, args...)...)
	}
	if runErr != nil {
		fail("run: %v", runErr)
	}
	if stopErr != nil {
		fail("%v", stopErr)
	}
	for _, l := range nodes.Logs() {
		b, err := os.ReadFile(l)
		if err != nil {
			fail("%v", err)
			continue
		}
		if p := brokertest.PanicLines(string(b)); len(p) > 0 {
			fail("%s reports a panic: %s", filepath.Base(l), p[0])
		}
		if strings.Contains(string(b), "WARNING: DATA RACE") {
			fail("%s reports a data race", filepath.Base(l))
		}
	}
	if h != nil {
		res := Check(h)
		t.Logf("seed %d:\n%s", seed, res)
		if res.Violations() > 0 {
			fail("%d violations", res.Violations())
		}
		if failed {
			if err := h.WriteFile(filepath.Join(dir, "history.json")); err != nil {
				t.Error(err)
			}
			if res.Linearizable == "illegal" {
				if err := WriteLinearizability(h, filepath.Join(dir, "linearizability.html")); err != nil {
					t.Error(err)
				}
			}
		}
	}
	if failed {
		t.Logf("seed %d: history, node logs and data kept in %s", seed, dir)
		return false
	}
	os.RemoveAll(dir)
	return true
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
	runScenario(t, scenario{nodes: 1, duration: 60 * time.Second, config: NewConfig})
}
