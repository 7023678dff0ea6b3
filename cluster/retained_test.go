package cluster_test

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestClusterRetainedConcurrentWriters: publishers on three nodes write
// the same retained topics at once. Each node appends on the condition
// that the topic's last message is the one it last applied, so appends
// conflict and are retried (without the retry this test fails with 0x80);
// every QoS 1/2 publish is still acknowledged, and every node ends with
// the same message per topic, the last one the stream took. Each node's
// first read, after the writes, is answered under a lease, not by a read
// marker: the lease, renewed in the background only while reads come, is
// renewed by that read itself (retained_lease.go, renewIfQuiet; without
// it every node's first read after a quiet spell took a marker).
func TestClusterRetainedConcurrentWriters(t *testing.T) {
	t.Parallel() // see harness_test.go
	tc := harness.StartCluster(t, 3)
	const rounds, topics = 20, 3
	var wg sync.WaitGroup
	errs := make(chan error, len(tc.Nodes)*rounds*topics)
	for i, nd := range tc.Nodes {
		pub := harness.Connect(t, nd, fmt.Sprint("conc-pub", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				for k := range topics {
					p := &paho.Publish{Topic: fmt.Sprint("conc/", k), QoS: byte(1 + (r+k)%2), Retain: true,
						Payload: []byte(fmt.Sprintf("%s:%d", nd.Name, r))}
					if rc, closed := pub.TryPublish(t, p); closed || rc >= 0x80 {
						errs <- fmt.Errorf("%s round %d topic %s: 0x%02X, closed %v", nd.Name, r, p.Topic, rc, closed)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	var first []string
	for i, nd := range tc.Nodes {
		harness.Eventually(t, harness.Wait, func() error {
			got := retainedOn(t, nd, fmt.Sprint("conc-check", i), "conc/#", 300*time.Millisecond)
			if len(got) != topics {
				return fmt.Errorf("%s: retained %q, want %d topics", nd.Name, got, topics)
			}
			for _, g := range got {
				if !strings.HasSuffix(g, fmt.Sprint(":", rounds-1)) {
					// Each node's last write of a topic is its last
					// round; whichever node's came last, it is that.
					return fmt.Errorf("%s: %q is not a last round's write", nd.Name, g)
				}
			}
			if first == nil {
				first = got
			} else if !slices.Equal(got, first) {
				return fmt.Errorf("%s: retained %q, another node %q", nd.Name, got, first)
			}
			return nil
		})
	}
	for _, nd := range tc.Nodes {
		if got := harness.CountLog(nd, markLine); got != 0 {
			t.Errorf("%s: %d retained reads by marker with every node up, want 0 (under a lease)", nd.Name, got)
		}
	}
}
