package cluster_test

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestClusterHoldThroughElection: a hold for a dead node's persistent
// session that its partition stream does not answer (nats.go gives up
// after about 500 ms, "no response from stream", while the stream elects
// a leader) is published again until forward_timeout (heldlane.go), so
// the publisher gets its PUBACK/PUBREC and the session gets the message
// once. Before, the first unanswered hold failed the forward: the QoS 1
// publisher's connection was closed (outcome unknown) and the QoS 2 one
// too, for a hold that a moment later would have succeeded. No election
// can be timed from outside to meet a hold, so the hold-unanswered fault
// makes n1's first holds fail as an election does; the retries are real
// publishes.
func TestClusterHoldThroughElection(t *testing.T) {
	t.Parallel() // see harness_test.go
	const unanswered = 3
	// A long adopt_after: the messages are held for n2 (not yet adopted)
	// and read by the claim on n3. A long forward_timeout: a real
	// election of a stream n2 led may come on top of the fault's.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: fmt.Sprintf("hold-unanswered=%d@n1", unanswered), Config: "cluster:\n  adopt_after: 30s\n  forward_timeout: 15s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	const expiry = 300
	_, pub := harness.PersistentPair(t, n2, n1, "he", expiry)
	tc.Kill(n2, syscall.SIGKILL)

	// More messages than unanswered holds, QoS 1 and 2: each must be
	// acknowledged with success on the same connection.
	var want []string
	for i := range unanswered + 2 {
		qos := byte(1 + i%2)
		p := fmt.Sprintf("q%d-%d", qos, i)
		rc, closed := pub.TryPublish(t, &paho.Publish{Topic: fmt.Sprintf("he/q%d", qos), QoS: qos, Payload: []byte(p)})
		if closed || rc != 0 {
			t.Fatalf("publish %s: reason 0x%02X, connection closed %v; want success (held after the stream answered); n1:\n%s",
				p, rc, closed, harness.GrepLog(n1, "held", "holding", "not confirmed"))
		}
		want = append(want, p)
	}
	if got := harness.CountLog(n1, "holding again: its partition stream did not answer"); got < unanswered {
		t.Fatalf("n1 published %d holds again, want at least %d (the fault's): the test did not take the retry's path", got, unanswered)
	}

	back := harness.Resume(t, n3, "he-sub", expiry, 60*time.Second)
	got := map[string]int{}
	deadline := time.After(20 * time.Second)
	for len(got) < len(want) {
		select {
		case p := <-back.In:
			if s := string(p.Payload); s != "probe" {
				got[s]++
			}
		case <-deadline:
			t.Fatalf("he-sub got %v on n3, want each of %v once; n3:\n%s", got, want, harness.GrepLog(n3, "he-sub", "held"))
		}
	}
	back.None(t, time.Second)
	for _, p := range want {
		if got[p] == 0 || p[1] == '2' && got[p] != 1 {
			t.Errorf("%s delivered %d times", p, got[p])
		}
	}
}
