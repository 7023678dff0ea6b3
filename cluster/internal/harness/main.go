package harness

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"testing"

	"github.com/roost-mqtt/roost/internal/clustertest"
)

// The process tests run real `roost serve` processes, one per node, on
// 127.0.0.2, .3, .4 (every address of 127.0.0.0/8 is the loopback on
// Linux, and the nodes bind their outgoing cluster connections to their
// own), with real MQTT clients (paho.golang) connected to different nodes.
// Each test has a cluster of its own (its own ports, data directories and,
// for partitions, network namespace), and they run in parallel
// (clusterLanes at a time): most of their time is spent waiting for what a
// cluster does in seconds (elections, timeouts), not on the CPU, and one
// after the other they took 7 minutes.

// clusterLanes is how many process tests of one package run at once
// unless -test.parallel says otherwise: they wait on elections and
// timeouts far more than they compute (the package alone used about half a
// core with three), so four fit on two cores. With three the package was
// the suite's long pole again; four took it from 419 to 324 s and the
// fresh-clone suite from 549 to 514 s at the same CPU (docs/testing.md,
// "Four lanes"). There are two such packages now (cluster and
// cluster/repro), which `go test -p 3` runs side by side: three each keeps
// six tests in flight, not eight. Eight, measured while other engineers'
// tests loaded the machine, cut the pair's wall by a third and failed
// more tests (lost and reordered messages at load 30-70, none a bound run
// out); six is a step from four, not a leap ("Two cluster packages").
const clusterLanes = 3

// Main is TestMain for a package of cluster process tests: it runs
// clusterLanes tests at a time unless -test.parallel is given, builds (or
// finds) the roost binary before the first test, so that a failed build
// fails once and at once, and exits with m's code.
func Main(m *testing.M) {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if !set {
		flag.Set("test.parallel", strconv.Itoa(clusterLanes))
	}
	if _, err := clustertest.Build(false); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	clustertest.Main(m)
}
