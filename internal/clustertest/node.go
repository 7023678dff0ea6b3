package clustertest

import (
	"cmp"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/eventually"
)

// Options says what cluster Start runs.
type Options struct {
	// Nodes is how many nodes: node i (from 0) is named "n(i+1)" and
	// listens on 127.0.0.(FirstIP+i). At least 1.
	Nodes int
	// FirstIP is the last byte of node 0's address. Default 2, so that
	// 127.0.0.1, where unbound client sockets come from, is no node's.
	FirstIP int
	// NodeArgs, if set, gives more arguments for the node named name on
	// address ip, after Args (a listener of its own, say).
	NodeArgs func(name, ip string) []string
	// Args are passed to every node's `roost serve` after the harness's
	// own (--listen, --data, --node, --cluster-listen, --cluster-peer,
	// --log-level debug, and --ballast 1MiB for data in memory), so a
	// later flag or a --config can add to them.
	Args []string
	// Env are KEY=VALUE pairs every node gets in its environment, on top
	// of the test process's. A test hands its nodes a fault to inject
	// (the cluster package's ROOST_TEST_FAULT) this way rather than with
	// t.Setenv, which would keep it from running in parallel.
	Env []string
	// Race runs a roost binary built with -race.
	Race bool
	// Data, if set, gives the --data directory of the node named name;
	// "" (and a nil Data) means the harness's choice: under DataEnv's
	// directory if set, else in memory (/dev/shm, when it is a tmpfs
	// with room), else in the test's TempDir (dataRoot). A test puts a
	// node on a file system of its own (a small tmpfs to fill) this way.
	Data func(name string) string
	// Later, if set, names the nodes Start does not start: the test starts
	// them (Node.Restart) when it wants, after the others (a node that
	// starts alone, without quorum). Start waits only for the others.
	Later func(name string) bool
	// NoWait returns from Start once the processes run, without waiting
	// for the nodes to form the cluster (for tests of a cluster that
	// cannot form).
	NoWait bool
	// Bin, if set, is the roost binary the nodes run, instead of
	// Build's: a benchmark comparing two builds side by side in one run.
	Bin string
	// Config, if set, is the YAML of every node's config file
	// (docs/config.md), which Start writes: a test's cluster settings
	// without a file of its own. Its relative paths are relative to a
	// directory of Start's; a config naming files of the test's passes
	// its own --config in Args or NodeArgs instead.
	Config string
	// Partitions is the nodes' session partitions (`cluster:
	// partitions`); 0 means TestPartitions. Start adds it to every node's
	// config (withConfig) unless that config sets it.
	Partitions int
}

// Bounds for a loaded 2-core machine running -race: a quiet node starts in
// about a second.
const (
	// StartBound bounds a node's start up to its MQTT listener.
	StartBound = 40 * time.Second
	// JoinBound bounds a node's joining the others and its replicated
	// state becoming ready once it listens.
	JoinBound = 30 * time.Second
	// StopBound bounds a node's exit after SIGTERM, before SIGKILL:
	// past roost serve's own shutdown bound (10 s, cmd/roost) plus the
	// engine's stop after it. A node whose session acknowledgements
	// waited for streams without a quorum takes that whole 10 s; at
	// load it logged its start 1.6 s after the signal and NATS's stop
	// after it took 3 s more: 15 s failed tests whose messages had all
	// come (TestReproKeptNamedClaimBack and TestReproKeptClaimBack, one
	// pass at load 90, session 32; 3 runs in 13 at load 17-31,
	// bench/jepsen/RESULTS.md branch reorder).
	StopBound = 30 * time.Second
)

// Cluster is the nodes Start started; they are stopped when the test that
// started them ends.
type Cluster struct {
	Nodes      []*Node
	bin        string
	partitions int
}

// Node is one `roost serve` process. Its fields are fixed when the
// cluster starts, except Args and Env, which a test may change before Restart.
type Node struct {
	// Name is the node's --node name: n1, n2, ...
	Name string
	// IP is the node's own address, 127.0.0.x.
	IP string
	// MQTT is the HOST:PORT of its MQTT listener.
	MQTT string
	// Cluster is its --cluster-listen HOST:PORT.
	Cluster string
	// Peers are the other nodes' Cluster addresses.
	Peers []string
	// Data is its --data directory.
	Data string
	// LogPath is the file its stdout and stderr are appended to, across
	// restarts.
	LogPath string
	// Args are the extra arguments of its command line (Options.Args).
	Args []string
	// Env is what its process gets in its environment on top of the test
	// process's (Options.Env); a test may change it before Restart, to
	// give a restarted node a fault the first start did not have.
	Env []string

	proc *Proc
	logs *logCounter
}

// Start runs the cluster opts describes, every node a peer of every
// other, and (unless opts.NoWait) waits until each node has heard from
// every other and its client-id ownership records and retained messages
// are ready. The nodes are stopped when t ends; if t failed, the tail of
// each node's log is logged.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Nodes < 1 {
		t.Fatalf("clustertest: %d nodes", opts.Nodes)
	}
	if opts.FirstIP == 0 {
		opts.FirstIP = 2
	}
	c := &Cluster{bin: opts.Bin, partitions: cmp.Or(opts.Partitions, TestPartitions)}
	if c.bin == "" {
		c.bin = Binary(t, opts.Race)
	}
	dir := t.TempDir()
	var root string
	var mem bool
	for i := range opts.Nodes {
		ip := fmt.Sprintf("127.0.0.%d", opts.FirstIP+i)
		name := fmt.Sprintf("n%d", i+1)
		var data string
		if opts.Data != nil {
			data = opts.Data(name)
		}
		var args []string
		if data == "" {
			if root == "" {
				root, mem = dataRoot(t)
			}
			data = filepath.Join(root, name)
			if mem {
				args = []string{"--ballast", memBallast}
			}
		}
		nd := &Node{Name: name, IP: ip,
			MQTT:    net.JoinHostPort(ip, strconv.Itoa(FreePort(t, ip))),
			Cluster: net.JoinHostPort(ip, strconv.Itoa(FreePort(t, ip))),
			Data:    data,
			LogPath: filepath.Join(dir, name+".log"),
			Args:    append(args, opts.Args...)}
		if opts.NodeArgs != nil {
			nd.Args = append(nd.Args, opts.NodeArgs(name, ip)...)
		}
		var err error
		if nd.Args, err = withConfig(nd.Args, dir, opts.Config, c.partitions); err != nil {
			t.Fatal(err)
		}
		nd.Env = slices.Clone(opts.Env)
		nd.proc = &Proc{Name: name, Bin: c.bin, LogPath: nd.LogPath}
		nd.logs = newLogCounter(nd.LogPath)
		c.Nodes = append(c.Nodes, nd)
	}
	for _, nd := range c.Nodes {
		for _, o := range c.Nodes {
			if o != nd {
				nd.Peers = append(nd.Peers, o.Cluster)
			}
		}
	}
	t.Cleanup(func() { c.stop(t) })
	var started []*Node
	for _, nd := range c.Nodes {
		if opts.Later == nil || !opts.Later(nd.Name) {
			nd.Restart(t)
			started = append(started, nd)
		}
	}
	if !opts.NoWait {
		for _, nd := range started {
			nd.WaitLog(t, "listener ready", 1, StartBound)
		}
		for _, nd := range started {
			nd.WaitLog(t, "cluster node joined", len(started)-1, JoinBound)
			nd.WaitReady(t, JoinBound)
		}
	}
	return c
}

// Partitions is the nodes' session partitions (Options.Partitions).
func (c *Cluster) Partitions() int { return c.partitions }

// Binary is the roost binary the cluster's nodes run.
func (c *Cluster) Binary() string { return c.bin }

// FreePort returns a TCP port the OS considers free on ip (FreeAddr for a
// test).
func FreePort(t testing.TB, ip string) int {
	t.Helper()
	addr, err := FreeAddr(ip)
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(port)
	return n
}

// Restart starts the node's process: the first time, or again after Kill
// or Stop, on the same data directory, appending to the same log. It does
// not wait for the node to be ready (WaitReady does).
func (nd *Node) Restart(t testing.TB) {
	t.Helper()
	args := []string{"serve", "--listen", "mqtt://" + nd.MQTT, "--data", nd.Data, "--node", nd.Name,
		"--cluster-listen", nd.Cluster, "--log-level", "debug"}
	for _, p := range nd.Peers {
		args = append(args, "--cluster-peer", p)
	}
	args = append(args, nd.Args...)
	nd.proc.Env = nd.Env
	if err := nd.proc.Start(args...); err != nil {
		t.Fatal(err)
	}
}

// Starts is how many times the node's process was started.
func (nd *Node) Starts() int { return nd.proc.Starts() }

// Pid is the process id of the node's current process (0 before its
// first start).
func (nd *Node) Pid() int { return nd.proc.Pid() }

// Done is closed when the node's current process has ended.
func (nd *Node) Done() <-chan struct{} { return nd.proc.Done() }

// Kill kills the node with SIGKILL (kill -9) and waits for its process to
// end.
func (nd *Node) Kill(t testing.TB) {
	t.Helper()
	if err := nd.proc.Kill(10 * time.Second); err != nil {
		t.Fatal(err)
	}
}

// Stop ends the node with SIGTERM, as an operator would, and waits for it
// to exit; after StopBound it fails t and kills it.
func (nd *Node) Stop(t testing.TB) {
	t.Helper()
	if nd.proc.Stop(StopBound) {
		t.Errorf("%s did not stop on SIGTERM within %v; killed it", nd.Name, StopBound)
	}
}

// Pause stops the node with SIGSTOP and waits until the kernel reports it
// stopped: kill(2) returns before it has.
func (nd *Node) Pause(t testing.TB) {
	t.Helper()
	if err := nd.proc.Pause(); err != nil {
		t.Fatal(err)
	}
}

// TryPause is Pause returning its error, for a goroutine that may not
// fail the test: a client's handler pausing the node as a message arrives,
// before the client answers it (TestReproGroupGoneHeld).
func (nd *Node) TryPause() error { return nd.proc.Pause() }

// Resume continues a paused node (SIGCONT).
func (nd *Node) Resume(t testing.TB) {
	t.Helper()
	nd.proc.Resume()
}

// CountLog counts the lines of the node's log (all its starts) that
// contain s. A line still being written counts once it is whole. Each
// call reads only what was appended since the last call for the same s.
func (nd *Node) CountLog(s string) int { return nd.logs.count(s) }

// WaitLog waits up to d until the node's log has at least n lines
// containing s. It fails t at once, with the log, if the process exits
// while it waits.
func (nd *Node) WaitLog(t testing.TB, s string, n int, d time.Duration) {
	t.Helper()
	eventually.NoError(t, d, func() error {
		if got := nd.CountLog(s); got < n {
			select {
			case <-nd.Done():
				b, _ := os.ReadFile(nd.LogPath)
				return fmt.Errorf("%s ended (%s) while waiting for %q; its log:\n%s", nd.Name, nd.proc.Exit(), s, b)
			default:
			}
			return fmt.Errorf("%s: %d log lines with %q, want %d", nd.Name, got, s, n)
		}
		return nil
	})
}

// ReadyLines are the log lines a cluster node writes, once per start,
// when it serves MQTT and its replicated state is usable: until then it
// closes CONNECTs with a client id without a CONNACK. The last is the
// start of both "cluster interest caught up" and "cluster interest
// incomplete" (a peer down): the node accepts CONNECTs only after one of
// them (interest_catchup.go), which may come after the others now that
// the replicated objects open in about a second.
var ReadyLines = []string{"listener ready", "cluster ownership records ready", "cluster retained messages caught up",
	`msg="cluster interest `}

// WaitReady waits up to d until the node's current process has written
// each of ReadyLines (once per start, so after a Restart it waits for the
// new process's lines).
func (nd *Node) WaitReady(t testing.TB, d time.Duration) {
	t.Helper()
	for _, l := range ReadyLines {
		nd.WaitLog(t, l, nd.Starts(), d)
	}
}

// stop ends every node (SIGTERM, SIGKILL after StopBound) in parallel; if t
// failed, it logs the tail of each node's log without NATS's info lines;
// if t failed or skipped, it keeps the whole logs (keepLogs).
func (c *Cluster) stop(t testing.TB) {
	var wg sync.WaitGroup
	for _, nd := range c.Nodes {
		if nd.Pid() == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			nd.Stop(t)
		}()
	}
	wg.Wait()
	// A node built with -race (Options.Race, or a race build handed in
	// by BinEnv, as the repro tests are run by hand to trace a failure)
	// reports a race in its log only, where no test looked until then.
	for _, nd := range c.Nodes {
		if r := raceReport(nd.LogPath); r != "" {
			t.Errorf("%s reports a data race:\n%s", nd.Name, r)
		}
	}
	if t.Failed() {
		for _, nd := range c.Nodes {
			t.Logf("--- %s log (without NATS info lines), last 60 lines:\n%s", nd.Name, nd.LogTail(60))
		}
	}
	// A skip is a missed path: why it was missed is in the logs too
	// (TestReproForwardOutReheld skipped 6 runs in 7, session 26, with
	// nothing kept to say why). KeepAllEnv keeps a passing test's too:
	// where its time goes is in them (TestReproGroupCopyUnclaimedMoved
	// waited 30 s for a log line that never came, session 28).
	if t.Failed() || t.Skipped() || os.Getenv(KeepAllEnv) != "" {
		c.keepLogs(t)
	}
	for _, nd := range c.Nodes {
		nd.logs.close()
	}
}

// KeepAllEnv, set to anything, has the logs of every test kept in
// ROOST_CLUSTERTEST_LOGS's directory, not only those of tests that failed
// or skipped.
const KeepAllEnv = "ROOST_CLUSTERTEST_KEEPALL"

// keepLogs copies the nodes' whole logs into the directory named by
// ROOST_CLUSTERTEST_LOGS, if set, before t.TempDir removes them: a
// failure seen once in many runs is analysed from the full debug logs,
// not only their last lines.
func (c *Cluster) keepLogs(t testing.TB) {
	dir := os.Getenv("ROOST_CLUSTERTEST_LOGS")
	if dir == "" {
		return
	}
	// Made if missing: a pass begun without it kept no log of its
	// failures (TestReproOpOrderRollup's 22 lost, session 32).
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Logf("keeping the node logs: %v", err)
		return
	}
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	// The time of keeping tells the runs of one test process apart: with
	// -test.count each run's logs overwrote the one before, and a failing
	// run of five kept only the last, passing one (TestReproOpHeldKilled,
	// session 32).
	at := time.Now().UTC().Format("150405.000")
	for _, nd := range c.Nodes {
		b, err := os.ReadFile(nd.LogPath)
		if err == nil {
			dst := filepath.Join(dir, fmt.Sprintf("%s-%d-%s-%s.log", name, os.Getpid(), at, nd.Name))
			err = os.WriteFile(dst, b, 0o644)
		}
		if err != nil {
			t.Logf("keeping %s's log: %v", nd.Name, err)
		}
	}
	t.Logf("node logs kept in %s", dir)
}

// raceReport returns the first data race report in the log at path
// (the race detector's block, up to 80 lines), "" for none.
func raceReport(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	const begin = "WARNING: DATA RACE"
	i := strings.Index(string(b), begin)
	if i < 0 {
		return ""
	}
	lines := strings.SplitN(string(b[i:]), "\n", 81)
	return strings.Join(lines[:min(len(lines), 80)], "\n")
}

// LogTail returns the last n lines of the node's log, leaving out NATS's
// own lines but for its warnings and errors.
func (nd *Node) LogTail(n int) string {
	b, _ := os.ReadFile(nd.LogPath)
	var keep []string
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.Contains(l, "component=nats") || strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep[max(0, len(keep)-n):], "\n")
}
