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

// TestReproUnpurgedAdoption: TestReproHandedReadLate's q2-9, delivered
// twice in about a quarter of its runs under load (bench/jepsen/RESULTS.md,
// "hrl"). There n3 adopted hl-sub from n2, renumbering its queue (n2's
// store numbers 21 and 22 for q1-9 and q2-9, behind two probes, became
// n3's 19 and 20); n3's adoption's rollup waited 7.5 s for its partition
// stream after n2's kill, and n3 lost the id to n1's claim meanwhile, so
// it went without its purge (a rollup of an id claimed elsewhere must not
// remove the newer owner's ops: TestReproStaleRollupPurge). n1 had written
// nothing yet; its claim read the stream: n2's ops, then n3's adoption on
// top, two numberings, and q1-9 and q2-9 twice in the record.
//
// Here: m1 and m2 wait in sub's session on n2 behind a completed p0 (n2's
// numbers 2 and up); the client connects to n3, whose adoption (numbers
// 1, 2) the fault ops-after-lost holds until 6 s after another node
// claimed the id from n3. The client connects to n1, whose claim n3
// answers late (release-late), and n1 is killed before it wrote anything.
// Once n3's ops are in the stream, the client resumes on n2, whose claim
// reads the stream (n1 gone). m1 and m2 must come once each.
func TestReproUnpurgedAdoption(t *testing.T) {
	t.Parallel() // see harness.Main
	const id, topic = "up-sub", "up/t"
	// No adoption by the janitor: the session moves by the client's
	// claims only, n1's record of it too; room for elections after the
	// kill.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "ops-after-lost=" + id + "@n3,release-late=" + id + "@n3", Config: "cluster:\n  adopt_after: 60s\n  forward_timeout: 15s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]

	sub := newQoS2Sub(t, id)
	if _, err := sub.connect(n2, true); err != nil {
		t.Fatal(err)
	}
	sub.subscribe(topic, 1, 15*time.Second)
	pub := harness.Connect(t, n2, id+"-pub")
	pub.AwaitInterest(t, topic)
	// p0 (and the probes) take n2's first store numbers.
	if rc := pub.Pub(t, &paho.Publish{Topic: topic, QoS: 2, Payload: []byte("p0")}); rc >= 0x80 {
		t.Fatalf("p0: 0x%02X", rc)
	}
	sub.until(15*time.Second, func() bool { return sub.completed["p0"] })
	// The completion's delete is durable once this SUBACK is written.
	sub.subscribe(topic+"/after", 2, 15*time.Second)
	sub.conn.Close()
	tc.WaitLog(n2, `"client disconnected" remote=`, 1, 15*time.Second)
	for _, m := range []string{"m1", "m2"} {
		if rc := pub.Pub(t, &paho.Publish{Topic: topic, QoS: 2, Payload: []byte(m)}); rc >= 0x80 {
			t.Fatalf("%s: 0x%02X", m, rc)
		}
	}

	// The client connects to n3, which moves the session in from n2 and
	// adopts it; its ops wait in n3's queue.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	first, err := rawclient.Dial(ctx, n3.MQTT)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { first.Close() })
	err = first.Write(rawclient.Connect{Version: 5, ClientID: id, KeepAlive: 60,
		Props: rawclient.PropU32(rawclient.PropSessionExpiry, harness.QueuedExpiry)}.Bytes(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	tc.WaitLog(n3, `"session moved here" node=n3 client_id=`+id, 1, 30*time.Second)

	// n1 claims the id from n3, which answers heldWaitMax late; n1 is
	// killed before that, its claim recorded and nothing written.
	claimOn(t, tc, n1, id, harness.QueuedExpiry)
	tc.Kill(n1, syscall.SIGKILL)
	// n3 lost the id; its adoption's ops, the rollup first, land now.
	tc.WaitLog(n3, "the ops held back are in the stream", 1, 30*time.Second)

	// The client resumes on n2, whose claim reads the stream.
	harness.Eventually(t, 60*time.Second, func() error {
		present, err := sub.connect(n2, false)
		if err == nil && !present {
			t.Fatalf("%s: resumed on n2 without its session", id)
		}
		return err
	})
	sub.resumed(n2, 30*time.Second, func() bool { return sub.completed["m1"] && sub.completed["m2"] })
	// What would come again comes right behind.
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); {
		if err := sub.read(end, func() bool { return false }); err != nil && time.Now().Before(end) {
			t.Fatalf("%s: %v after m1 and m2", id, err)
		}
	}
	if sub.got["m1"] != 1 || sub.got["m2"] != 1 {
		t.Errorf("%s got m1 %d times and m2 %d times at QoS 2, want once each\nn2:\n%s\nn3:\n%s", id, sub.got["m1"], sub.got["m2"],
			harness.GrepLog(n2, id), harness.GrepLog(n3, id, "test fault"))
	}
	// The checks above hold whichever way the session went; a run that
	// missed the path says so.
	switch {
	case harness.CountLog(n3, "the ops held back go out after the claim elsewhere") == 0:
		t.Skipf("n3's ops did not wait for the claim elsewhere: the test missed its path; n3:\n%s", harness.GrepLog(n3, id, "test fault"))
	case harness.CountLog(n2, `"session moved here" node=n2 client_id=`+id+` from="replicated record"`) == 0:
		t.Skipf("n2 did not take %s from the stream: the test missed its path; n2:\n%s", id, harness.GrepLog(n2, id))
	}
}
