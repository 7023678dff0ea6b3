package repro_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"github.com/roost-mqtt/roost/internal/rawclient"
)

// TestReproStaleRollupPurge: test/jepsen TestClusterFull seed 46
// (bench/jepsen/RESULTS.md, "Session 19 (lead)"): n3, resumed from a
// pause, adopted ps2 from n2 with the adoption's rollup queued (its
// partition stream had no quorum for n3 yet); the client went back to
// n2, which claimed the session back and completed two QoS 2 exchanges,
// each step replicated; n3's rollup landed then and purged the stream's
// older ops, n2's among them; n2 was killed and n1's claim read n3's
// older state from the stream and sent the completed messages again.
// A rollup of an id another node claimed since must not purge. Here:
// m1 waits in the session on n2; the client connects to n3, whose
// adoption's ops the fault ops-after-lost holds until 4 s after the
// client went back to n2; there it completes m1; n3's ops land; n2 is
// killed and the client resumes on n1. m1 must not come again.
func TestReproStaleRollupPurge(t *testing.T) {
	t.Parallel() // see harness.Main
	const id, topic = "sr-sub", "sr/t"
	// adopt_after 60 s: no janitor takes the session from the killed n2
	// before the client's claim on n1 does.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "ops-after-lost=" + id + "@n3", Config: "cluster:\n  adopt_after: 60s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]

	sub := newQoS2Sub(t, id)
	if _, err := sub.connect(n2, true); err != nil {
		t.Fatal(err)
	}
	sub.subscribe(topic, 1, 15*time.Second)
	sub.conn.Close()
	tc.WaitLog(n2, `"client disconnected" remote=`, 1, 15*time.Second)
	pub := harness.Connect(t, n1, id+"-pub")
	pub.AwaitInterest(t, topic)
	if rc := pub.Pub(t, &paho.Publish{Topic: topic, QoS: 2, Payload: []byte("m1")}); rc >= 0x80 {
		t.Fatalf("m1: 0x%02X", rc)
	}

	// The client connects to n3, which takes the session (and m1) from
	// n2; its CONNACK waits for the adoption's ops, which wait in n3's
	// queue.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	stale, err := rawclient.Dial(ctx, n3.MQTT)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stale.Close() })
	err = stale.Write(rawclient.Connect{Version: 5, ClientID: id, KeepAlive: 60,
		Props: rawclient.PropU32(rawclient.PropSessionExpiry, harness.QueuedExpiry)}.Bytes(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	tc.WaitLog(n3, `"session moved here" node=n3 client_id=`+id, 1, 30*time.Second)
	// The partition's sender logs the held ops when it next wakes for
	// them, just after the adoption journalled them: waited for, not
	// counted at once (the fresh-clone suite, session 22, counted first).
	for end := time.Now().Add(10 * time.Second); harness.CountLog(n3, "the partition stream takes no ops of this node") == 0 && time.Now().Before(end); {
		time.Sleep(50 * time.Millisecond)
	}
	if harness.CountLog(n3, "the partition stream takes no ops of this node") == 0 {
		t.Fatalf("n3 held none of its ops for %s: the test missed its path; n3:\n%s", id, harness.GrepLog(n3, id, "test fault"))
	}

	// The client gives up on n3 and goes back to n2, which claims the
	// session back from n3 and delivers m1; the client completes it.
	harness.Eventually(t, 60*time.Second, func() error {
		present, err := sub.connect(n2, false)
		if err == nil && !present {
			t.Fatalf("%s: back on n2 without its session", id)
		}
		return err
	})
	sub.resumed(n2, 30*time.Second, func() bool { return sub.completed["m1"] })
	// The completion's delete is durable once this SUBACK is written.
	sub.subscribe(topic+"/after", 2, 15*time.Second)
	if harness.CountLog(n3, "the ops held back go out after the claim elsewhere") > 0 {
		t.Fatalf("n3's held ops went out before %s completed m1 on n2: the test missed its path (machine too slow?)", id)
	}
	// n3's adoption ops, the rollup first, land after n2's.
	tc.WaitLog(n3, "the ops held back are in the stream", 1, 30*time.Second)

	tc.Kill(n2, syscall.SIGKILL)
	harness.Eventually(t, 60*time.Second, func() error {
		present, err := sub.connect(n1, false)
		if err == nil && !present {
			t.Fatalf("%s: resumed on n1 without its session", id)
		}
		return err
	})
	if rc := pub.Pub(t, &paho.Publish{Topic: topic, QoS: 2, Payload: []byte("m2")}); rc >= 0x80 {
		t.Fatalf("m2: 0x%02X", rc)
	}
	sub.resumed(n1, 30*time.Second, func() bool { return sub.completed["m2"] })
	if sub.got["m1"] != 1 || sub.got["m2"] != 1 {
		t.Fatalf("%s got m1 %d times and m2 %d times at QoS 2, want once each\nn1:\n%s\nn3:\n%s", id, sub.got["m1"], sub.got["m2"],
			harness.GrepLog(n1, id), harness.GrepLog(n3, id, "test fault"))
	}
}
