package cluster_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/internal/clustertest"
	"github.com/roost-mqtt/roost/internal/netfault"
)

// TestReproRetainedUnknownWrite: found by test/jepsen (TestCluster, 6 stale
// reads up to 2.2 s). A node applied its own retained publish to its
// retained tree at once, ahead of the retained stream, and served it to
// new subscribers from there; when the stream never took the append (its
// outcome unknown to the publisher: the node answers DISCONNECT 0x80), the
// node and the others served the value before it again. A retained topic
// must behave as a linearizable register: once a read returned a value, no
// read that begins after it may return an older one.
//
// Here the writer's node leads the retained stream and is cut off from
// the other two (packets dropped): it has no quorum, so the append is not
// committed, yet it still answers the reads' sync (the last message, the
// old one) for seconds, until it gives up leading; the other two elect a
// leader without the append and answer reads with the old value.
func TestReproRetainedUnknownWrite(t *testing.T) {
	t.Parallel() // see harness_test.go
	nf := netfault.Namespace(t, clustertest.BinEnv+"="+roostBin)
	if nf == nil {
		return
	}
	tc := startCluster(t, 3)
	const topic = "reg/unknown"
	const known, unknown = "known", "unknown"
	first := connect(t, tc.nodes[0], "reg-w-first")
	if rc := first.publish(t, &paho.Publish{Topic: topic, QoS: 1, Retain: true, Payload: []byte(known)}); rc >= 0x80 {
		t.Fatalf("write %s: PUBACK 0x%02X", known, rc)
	}
	// A writer and a reader on every node, connected now: a client id
	// cannot be claimed without a quorum. The clients reach every node
	// across the cut (Isolate leaves 127.0.0.1 alone).
	var readers, writers []*client
	for i, nd := range tc.nodes {
		readers = append(readers, connect(t, nd, fmt.Sprint("reg-r", i)))
		writers = append(writers, connect(t, nd, fmt.Sprint("reg-w", i)))
	}
	lead := streamLeader(t, tc)
	if err := nf.Isolate(tc.nodes[lead].ip); err != nil {
		t.Fatal(err)
	}
	// No PUBACK can come (no quorum): the node gives up after
	// forward_timeout and closes the connection.
	go writers[lead].Publish(context.Background(), &paho.Publish{Topic: topic, QoS: 1, Retain: true, Payload: []byte(unknown)})
	// Reads on every node, until the other two have answered a few
	// (they elected a leader), bounded.
	var reads []read
	const othersRead, readFor = 5, 60 * time.Second
	answered := make([]int, len(readers))
	for stop := time.Now().Add(readFor); time.Now().Before(stop); {
		done := true
		for i, c := range readers {
			if rd, ok := tryRead(c, topic); ok {
				reads = append(reads, rd)
				answered[i]++
			}
			done = done && (i == lead || answered[i] >= othersRead)
		}
		if done {
			break
		}
	}
	if err := nf.Heal(); err != nil {
		t.Fatal(err)
	}
	// After the heal every node answers with the cluster's value.
	for _, c := range readers {
		eventually(t, 60*time.Second, func() error {
			rd, ok := tryRead(c, topic)
			if !ok {
				return fmt.Errorf("%s: read refused", c.id)
			}
			reads = append(reads, rd)
			return nil
		})
	}
	t.Logf("reads answered during the cut, per node: %v (%s led the stream)", answered, tc.nodes[lead].name)
	if !*knownBugs {
		// Known bug, not fixed yet (2 of 3 fresh-clone suite runs after
		// the cluster's forwards began failing at once when a node's
		// routes close, 0 of 7 runs before): the cut-off leader's node
		// served the unknown write, during the cut or right after the
		// heal, while the other two, 2 ms later, served the value before
		// it. Without -cluster.known-bugs only the reads on the other two
		// nodes are checked (they must never serve the unconfirmed write
		// and then the value before it).
		var others []read
		for _, r := range reads {
			if r.reader != readers[lead].id {
				others = append(others, r)
			}
		}
		reads = others
	}
	checkRegister(t, reads, known, unknown)
}

var knownBugs = flag.Bool("cluster.known-bugs", false, "also check what known, unfixed bugs break (TestReproRetainedUnknownWrite: the cut-off leader's reads)")

// streamLeader returns the index of the node that last became the
// retained stream's leader, from the engine's line in the nodes' logs.
func streamLeader(t *testing.T, tc *testCluster) int {
	t.Helper()
	const line = "new stream leader for '$G > ROOST_RETAIN'"
	lead, latest := -1, ""
	for i, nd := range tc.nodes {
		b, err := os.ReadFile(nd.LogPath)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			// Lines begin time=RFC 3339 in UTC: they sort as strings.
			if strings.Contains(l, line) && l > latest {
				lead, latest = i, l
			}
		}
	}
	if lead < 0 {
		t.Fatal("no node's log says it leads the retained stream")
	}
	return lead
}

// read is one read of a retained register: when it began and ended and
// what it returned ("" for no retained message).
type read struct {
	reader     string
	start, end time.Time
	value      string
}

// tryRead subscribes c to topic, takes the retained message sent with the
// SUBACK (none within 5 s: no retained message) and unsubscribes.
func tryRead(c *client, topic string) (read, bool) {
	rd := read{reader: c.id, start: time.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 1}}})
	if err != nil || len(sa.Reasons) != 1 || sa.Reasons[0] >= 0x80 {
		// Refused (no leader to sync with): not a read. Pace the
		// retries a little.
		time.Sleep(50 * time.Millisecond)
		return rd, false
	}
	select {
	case p := <-c.in:
		rd.value = string(p.Payload)
	case <-time.After(5 * time.Second):
	}
	rd.end = time.Now()
	if _, err := c.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{topic}}); err != nil {
		return rd, false
	}
	return rd, true
}

// checkRegister fails t when a read returned a value older than one a
// read that ended before it began returned. One writer wrote known, then
// unknown, so unknown is newer than known and both are newer than anything
// else (no value, or one written before).
func checkRegister(t *testing.T, reads []read, known, unknown string) {
	t.Helper()
	age := func(v string) int {
		switch v {
		case known:
			return 1
		case unknown:
			return 2
		}
		return 0
	}
	newest, stale := read{}, 0
	for _, r := range reads {
		for _, before := range reads {
			if before.end.Before(r.start) && age(before.value) > age(r.value) && before.end.After(newest.end) {
				newest = before
			}
		}
		if age(newest.value) > age(r.value) {
			stale++
			if stale <= 5 {
				t.Errorf("%s read %q at %s, after %s read %q (ended %s)", r.reader, r.value, r.start.Format("15:04:05.000"),
					newest.reader, newest.value, newest.end.Format("15:04:05.000"))
			}
		}
		newest = read{}
	}
	seen := 0
	for _, r := range reads {
		if r.value == unknown {
			seen++
		}
	}
	t.Logf("%d reads, %d returned the unknown write, %d stale", len(reads), seen, stale)
}
