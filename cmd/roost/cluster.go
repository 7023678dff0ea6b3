package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/roost-mqtt/roost/client"
)

const clusterHelp = `roost cluster status: connects to one node of a cluster (-h, -p and the
other connection flags of roost sub) and prints that node's view of the
cluster from its $SYS/broker/cluster/ figures: its name, the nodes it
reaches, its routes, whether its JetStream is current and whether it can
record client-id owners and follows the retained stream; then its counters:
messages forwarded by QoS, round trips, ownership claims and takeovers, the
retained stream's size, interest entries (docs/cluster.md).

Exit status: 0 when the node reports the figures; 1 when it reports none
within -W seconds (default 3: not a cluster node, $SYS off, or not allowed
to read $SYS/#) or the connection fails; the CONNACK code when refused.`

// sysClusterPrefix is where a node publishes its cluster figures.
const sysClusterPrefix = "$SYS/broker/cluster/"

func runCluster(ctx context.Context, args []string, std stdio) int {
	stdout, stderr := std.out, std.err
	if len(args) == 0 || args[0] != "status" {
		fs := newFlagSet("cluster status", "", clusterHelp, stderr)
		if code, ok := parseFlags(fs, args); !ok {
			return code // -h: usage, exit 0
		}
		fmt.Fprintln(stderr, "roost cluster: want the subcommand status")
		fs.Usage()
		return 2
	}
	fs := newFlagSet("cluster status", "", clusterHelp, stderr)
	var cf connFlags
	cf.register(fs, true)
	wait := fs.Int("W", 3, "give up after `seconds` without figures")
	if code, ok := cf.parse(fs, args[1:]); !ok {
		return code
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(*wait)*time.Second)
	defer cancel()
	c, code := cf.connect(ctx, stderr, stderr)
	if c == nil {
		return code
	}
	defer cf.disconnect(c)
	var mu sync.Mutex
	figures := map[string]string{}
	got := make(chan struct{}, 1)
	handle := func(m *client.Message) {
		mu.Lock()
		figures[strings.TrimPrefix(m.Topic, sysClusterPrefix)] = string(m.Payload)
		mu.Unlock()
		select {
		case got <- struct{}{}:
		default:
		}
	}
	if _, err := c.Subscribe(ctx, client.Subscription{Filter: sysClusterPrefix + "#", Handler: handle}); err != nil {
		return cf.fail(stderr, err)
	}
	// Retained figures follow the SUBACK at once: wait for the first,
	// then a little for the rest.
	select {
	case <-got:
	case <-ctx.Done():
		fmt.Fprintln(stderr, "roost cluster status: the node published no cluster figures (not a cluster node, or $SYS is off or not readable)")
		return 1
	}
	select {
	case <-time.After(300 * time.Millisecond):
	case <-ctx.Done():
	}
	mu.Lock()
	defer mu.Unlock()
	keys := make([]string, 0, len(figures))
	for k := range figures {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	// The state of the cluster first, then the counters, each block
	// aligned on its own (a line without a tab ends a tabwriter block).
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	for _, summary := range []bool{true, false} {
		if !summary {
			fmt.Fprintln(tw)
		}
		for _, k := range keys {
			if isSummaryFigure(k) == summary {
				fmt.Fprintf(tw, "%s\t%s\n", k, figures[k])
			}
		}
	}
	tw.Flush()
	return 0
}

// isSummaryFigure tells the figures that say what state the cluster is in
// (names, nodes, routes, readiness) from the counters and details.
func isSummaryFigure(k string) bool {
	return !strings.Contains(k, "/") || strings.HasPrefix(k, "nodes/") || strings.HasPrefix(k, "routes/")
}
