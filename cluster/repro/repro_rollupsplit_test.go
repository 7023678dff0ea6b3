package repro_test

import (
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"github.com/roost-mqtt/roost/internal/clustertest"
)

// TestReproRollupSplit: an adoption's rollup must carry the whole session.
// The rollup purges every earlier op of the session's subject; the broker
// journalled an adopted session one op at a time, so the partition sender
// could publish the rollup with the first of them only and the rest in
// the next pack, after the rollup's acknowledgement. A node killed between
// the two left a record of the session's first messages: what the earlier
// owners had replicated, acknowledged to their publishers, was purged, and
// the rest of it died with the node (test/jepsen TestClusterFull seed 48:
// ps1 moved live n2 -> n3, whose rollup held 60 of the 229 messages, n3
// killed 127 ms later; n1's claim read the 60, 167 acknowledged messages
// lost). Here rs-sub's session, offline with 120 messages queued on n1,
// moves live to n2, whose partition stream takes nothing of n2's after
// the adoption's rollup (the fault ops-after-rollup: the kill after the
// rollup's acknowledgement); n2 is killed and rs-sub resumes on n3 from
// the stream: every acknowledged message must reach it, QoS 2 once.
func TestReproRollupSplit(t *testing.T) {
	t.Parallel() // see harness.Main
	const id = "rs-sub"
	// No adoption by the janitor while n2 is dead: the session moves by
	// its client's claims only. The queue must take everything.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "ops-after-rollup=" + id + "@n2", Config: "cluster:\n  adopt_after: 60s\nlimits:\n  max_queued: 100000\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	sub, pub := harness.PersistentPair(t, n1, n3, "rs", 600)
	sub.Disconnect(&paho.Disconnect{})
	tc.WaitLog(n1, "client_id="+id+` reason="client disconnected normally"`, 1, 10*time.Second)
	pp := &pacedPub{t: t, nd: n3, id: "rs-pub", prefix: "rs", pub: pub}
	for len(pp.want) < 120 && pp.i < 240 {
		pp.publish()
	}
	if len(pp.want) < 120 {
		t.Fatalf("only %d of %d messages acknowledged", len(pp.want), 2*pp.i)
	}
	// The move to n2. Its CONNACK waits for ops of n2's that the fault
	// keeps from the stream: it never comes, and nothing is delivered
	// there.
	expiry := uint32(600)
	go func() {
		c, _, err := clustertest.Dial(t, n2.MQTT, &paho.Connect{ClientID: id, CleanStart: false, KeepAlive: 30,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
		if err == nil {
			c.Disconnect(&paho.Disconnect{})
		}
	}()
	tc.WaitLog(n2, `"session moved here" node=n2 client_id=`+id+` from=n1`, 1, 30*time.Second)
	tc.WaitLog(n2, "test fault: the partition stream takes no more ops of this node after the rollup", 1, 30*time.Second)
	tc.Kill(n2, syscall.SIGKILL)
	c := pp.resume(n3, id)
	pp.check(c, n2, n3)
	if harness.CountLog(n3, `"session moved here" node=n3 client_id=`+id+` from="replicated record"`) == 0 {
		t.Errorf("n3 did not take %s from the stream: the test missed its path; n3:\n%s", id, harness.GrepLog(n3, "client_id="+id))
	}
}
