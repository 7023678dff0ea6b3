package cluster_test

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/cluster"
	"github.com/roost-mqtt/roost/internal/clustertest"
)

var starts = flag.Int("cluster.starts", 0, "TestClusterStartTimes: how many 3-node cluster starts to time (0 skips it)")

// TestClusterStartTimes times *starts starts of a fresh 3-node cluster,
// from the processes' start to every node being ready (clustertest.Start),
// and logs each with the slowest node's steps from its log. It is a
// measurement (docs/cluster.md, "Starting"), not a check of a bound:
//
//	go test -count=1 ./cluster/ -run TestClusterStartTimes -cluster.starts=10 -v
func TestClusterStartTimes(t *testing.T) {
	if *starts <= 0 {
		t.Skip("a measurement: run with -cluster.starts=N")
	}
	var took []time.Duration
	for i := range *starts {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			began := time.Now()
			// The product's partitions, not the tests' 2: a measurement of what a deployment runs.
			c := clustertest.Start(t, clustertest.Options{Nodes: 3, Partitions: cluster.DefaultPartitions})
			d := time.Since(began)
			took = append(took, d)
			var steps []string
			for _, nd := range c.Nodes {
				steps = append(steps, nd.Name+": "+startSteps(t, nd.LogPath, began))
			}
			t.Logf("start %d: %v\n%s", i, d.Round(10*time.Millisecond), strings.Join(steps, "\n"))
		})
	}
	slices.Sort(took)
	var sum time.Duration
	for _, d := range took {
		sum += d
	}
	t.Logf("%d starts: min %v median %v max %v mean %v; all %v", len(took), took[0].Round(10*time.Millisecond),
		took[len(took)/2].Round(10*time.Millisecond), took[len(took)-1].Round(10*time.Millisecond),
		(sum / time.Duration(len(took))).Round(10*time.Millisecond), took)
}

// startSteps returns when (since began) the node logged each of the steps
// of its start.
func startSteps(t *testing.T, path string, began time.Time) string {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	marks := []string{"listener ready", "cluster ownership records ready", "cluster session streams ready",
		"cluster retained messages caught up", "cluster: replicated state not ready", "cluster: JetStream meta layer"}
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		for _, m := range marks {
			if !strings.Contains(line, `msg="`+m) {
				continue
			}
			ts, _, _ := strings.Cut(strings.TrimPrefix(line, "time="), " ")
			at, err := time.Parse(time.RFC3339Nano, ts)
			if err != nil {
				continue
			}
			what := m
			if _, err, ok := strings.Cut(line, " err="); ok {
				what += " (" + err + ")"
			}
			out = append(out, fmt.Sprintf("%s %v", what, at.Sub(began).Round(10*time.Millisecond)))
		}
	}
	return strings.Join(out, ", ")
}
