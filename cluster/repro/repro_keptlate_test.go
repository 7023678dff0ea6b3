package repro_test

import (
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// TestReproKeptBeforeLateOps: what a disowned copy kept in its node's
// held subject reaches the session's next owner even when the copy's own
// ops from before the disown land in the stream after it (issue 17,
// test/jepsen TestClusterFull seed 49, 2026-12-06 12:50: g0 lost pub1#381
// and pub2#398). There n2, paused with both g0 members, resumed and
// fenced g0m1 for n3's claim (04.703); its copy kept the two messages
// (04.774, 04.996); n2's SessionPut of g0m1, queued at 04.689 when the
// connection dropped, reached the partition stream only at 05.242; n3,
// whose release request n2 never answered, read the stream (05.604) and
// the held subjects from the session's last op by its stored time,
// 05.242: the kept copies were before it and never read.
//
// Here kl-sub, the only member of share group kg, lives on n2, offline;
// its SessionPut of going offline waits in n2's queue (ops-after-keep)
// until 500 ms after n2's copy, fenced for n3's claim (delay-release,
// n3 then paused), kept its first message (whose confirmation waits for
// them: one message of the paced publisher at least). A publisher on n1 sends QoS 1 and
// 2 into the fence window; n2's copy ends, n3 is killed and the client
// resumes on n1, which reads the stream. Every acknowledged message must
// reach the group, first deliveries in order, a QoS 2 one once.
func TestReproKeptBeforeLateOps(t *testing.T) {
	t.Parallel() // see harness_test.go
	const id = "kl-sub"
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "delay-release=" + id + "@n3,ops-after-keep=" + id + "@n2", Config: "cluster:\n  adopt_after: 60s\n  forward_timeout: 15s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	sub := harness.NewPersistent(t, n2, id, paho.SubscribeOptions{Topic: "$share/kg/kl/q1", QoS: 1},
		paho.SubscribeOptions{Topic: "$share/kg/kl/q2", QoS: 2})
	pub := harness.Connect(t, n1, "kl-pub")
	pub.AwaitInterest(t, "kl/q1")
	pub.AwaitInterest(t, "kl/q2")
	sub.Disconnect(&paho.Disconnect{}) // the session stays on n2, offline; its op waits
	tc.WaitLog(n2, "client_id="+id+` reason="client disconnected normally"`, 1, harness.Wait)

	claimOn(t, tc, n3, id, harness.QueuedExpiry)
	tc.Kill(n3, syscall.SIGSTOP)
	tc.WaitLog(n2, `(owner records)" node=n2 client_id=`+id, 1, 60*time.Second)
	if harness.CountLog(n2, `"session ended: its client id is owned by another node" client_id=`+id) > 0 {
		t.Fatalf("n2's copy of %s ended before the test published into its fence window", id)
	}
	orderAcrossResume(t, n1, &pub, "kl-pub", n1, id, harness.QueuedExpiry, func() {
		tc.WaitLog(n2, `"session ended: its client id is owned by another node" client_id=`+id, 1, 60*time.Second)
		tc.Kill(n3, syscall.SIGKILL)
	})
	keptOn(t, n2, id)
	if harness.CountLog(n2, "cluster: test fault: the ops held back go out after the disowned copy kept messages") == 0 {
		t.Errorf("n2's ops of %s did not land after its copy kept messages: the test missed its path\nn2:\n%s", id, harness.GrepLog(n2, "client_id="+id, "test fault"))
	}
}
