package repro_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestReproLateOpsKept: TestReproPausedOwnerMovesLive's loss (session 28,
// 1 run of 47 at load 25; bench/jepsen/RESULTS.md, "pom28"). n3, back from
// its pause, took n1's live forward of q2-19 into its copy of pm-sub; the
// QueuePut waited for its partition stream (no quorum for n3 yet). n2
// claimed pm-sub, n3's records fenced the copy, n3 told n2 to read the
// stream, and n2 read it before the QueuePut landed; it landed behind
// n2's adoption, an older epoch's op every reader skips, and confirmed the
// forward: acknowledged and lost. The disown now keeps such messages, their
// ops still queued, in the node's held subject (cluster/keeplate.go).
//
// Here: the session is on n2, offline; n2's ops wait from then on
// (ops-offline-timed) until well after n3's claim read the stream. m0,
// published on n1, reaches n2's copy; then the client connects to n3,
// whose claim waits before its release request (delay-release): n2's
// watcher fences the copy first (the disown), its end has n3 read the
// stream. m0 is acknowledged once n2's ops land, and must come.
func TestReproLateOpsKept(t *testing.T) {
	t.Parallel() // see harness.Main
	const id, topic = "lk-sub", "lk/t"
	tc, sub, pub := startQoS2OnN2(t, id, topic, "delay-release="+id+"@n3,ops-offline-timed="+id+"@n2")
	n2, n3 := tc.Nodes[1], tc.Nodes[2]
	sub.conn.Close()
	tc.WaitLog(n2, "client_id="+id+" reason=", 1, 15*time.Second)

	// m0's acknowledgement waits for n2's ops: published aside.
	acked := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
		defer cancel()
		r, err := pub.Publish(ctx, &paho.Publish{Topic: topic, QoS: 2, Payload: []byte("m0")})
		if err == nil && r != nil && r.ReasonCode >= 0x80 {
			err = fmt.Errorf("refused: 0x%02X", r.ReasonCode)
		}
		acked <- err
	}()
	tc.WaitLog(n2, "a message queued for a client whose ops wait", 1, 15*time.Second)

	claimOn(t, tc, n3, id, harness.QueuedExpiry)
	harness.Eventually(t, 60*time.Second, func() error {
		present, err := sub.connect(n3, false)
		if err == nil && !present {
			t.Fatalf("%s: resumed on n3 without its session", id)
		}
		return err
	})
	// Read from the stream unless n2's copy ended after n3's request
	// (fenceGrace against releaseDelay: a slow node), then moved live
	// with m0: m0 is owed either way, and checked before a missed path
	// skips.
	stream := harness.CountLog(n3, `"session moved here" node=n3 client_id=`+id+` from="replicated record"`) > 0
	select {
	case err := <-acked:
		if err != nil {
			t.Skipf("m0 not acknowledged (%v): nothing owed, the test missed its path; n2:\n%s", err, harness.GrepLog(n2, "client_id="+id, "test fault"))
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("m0 neither acknowledged nor refused within 30 s; n2:\n%s", harness.GrepLog(n2, "client_id="+id, "test fault"))
	}
	if err := sub.read(time.Now().Add(15*time.Second), func() bool { return sub.completed["m0"] }); err != nil {
		t.Fatalf("%s: acknowledged m0 not delivered: %v (got %v)\nn2:\n%s\nn3:\n%s", id, err, sub.got,
			harness.GrepLog(n2, "client_id="+id, "test fault"), harness.GrepLog(n3, "client_id="+id))
	}
	t.Logf("n2: %s", harness.GrepLog(n2, "before its disown"))
	if sub.got["m0"] != 1 {
		t.Errorf("QoS 2 message m0 delivered %d times", sub.got["m0"])
	}
	if !t.Failed() && !stream {
		t.Skipf("n3 did not read %s from the stream (moved live): the test missed its path; n3:\n%s", id, harness.GrepLog(n3, "client_id="+id))
	}
}
