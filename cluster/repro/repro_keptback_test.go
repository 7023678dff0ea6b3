package repro_test

import (
	"fmt"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// TestReproKeptClaimBack: test/jepsen TestClusterFull seed 52 on main
// (session 21; bench/jepsen/RESULTS.md, "ps52"). ps1's session was on n3,
// offline, its QueuePuts waiting in n3's queue (the partition stream
// without a quorum for n3). n1 claimed the id and could not read the
// stream; n3 fenced its copy, which took pub1#382 and kept it in n3's
// held subject; n3's QueuePuts landed 177 ms later. The client came back
// to n3, whose claim read the stream: its read of the held subjects began
// at those QueuePuts, after the kept copy, which it left out (lost); and
// the end of the replaced copy, kept local, took the adoption's rollup
// mark, so the session went to the stream renumbered on top of its old
// deliveries, which stayed once the client completed the new ones: n3
// was killed and n2's claim sent pub2#386 again (QoS 2 twice).
//
// Here: the session is on n2 with q1 and q2 inflight under delivery
// numbers past the first few, offline; n2's ops from then on wait
// (ops-offline-lost) until its disowned copy kept a message. n3 claims
// and waits before its release request (delay-release); n2 fences its
// copy, which takes k1 (kept); n2's ops land; the client resumes on n2,
// whose claim n3 tells to read the stream, and completes everything; n2
// is killed, and the client resumes on n1. Every acknowledged
// message must come, a QoS 2 one once, with Session Present each time.
func TestReproKeptClaimBack(t *testing.T) {
	t.Parallel() // see harness_test.go
	const id, topic = "kb-sub", "kb/t"
	tc, sub, pub := startQoS2OnN2(t, id, topic, "delay-release="+id+"@n3,ops-offline-lost="+id+"@n2")
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	publish := func(payload string) {
		t.Helper()
		if rc := pub.Pub(t, &paho.Publish{Topic: topic, QoS: 2, Payload: []byte(payload)}); rc >= 0x80 {
			t.Fatalf("%s: 0x%02X", payload, rc)
		}
	}
	// Completed deliveries move the session's delivery numbers on: an
	// adoption numbers its queue from 1.
	warm := []string{"w1", "w2", "w3", "w4"}
	for _, w := range warm {
		publish(w)
	}
	sub.until(30*time.Second, func() bool {
		for _, w := range warm {
			if !sub.completed[w] {
				return false
			}
		}
		return true
	})
	// q1 and q2 go out to the client, which goes without answering:
	// inflight in the record under their numbers.
	publish("q1")
	publish("q2")
	sub.conn.Close()
	tc.WaitLog(n2, "client_id="+id+" reason=", 1, 15*time.Second)

	claimOn(t, tc, n3, id, harness.QueuedExpiry)
	tc.WaitLog(n2, `(owner records)" node=n2 client_id=`+id, 1, 60*time.Second)
	if harness.CountLog(n2, "the partition stream takes no ops of this node") == 0 {
		t.Fatalf("n2 held none of its ops for %s: the test missed its path; n2:\n%s", id, harness.GrepLog(n2, id, "test fault"))
	}
	// To n2's disowned copy: kept. Then n2's ops written before the
	// fence land (its confirmation waits for them).
	publish("k1")
	tc.WaitLog(n2, "the ops held back are in the stream", 1, 30*time.Second)

	// Back on n2 within the copy's fenceGrace and before n3's release
	// request: n3, its claim not done, tells n2 to read the stream (as
	// n1 told n3 in seed 52), and n2's claim replaces the disowned copy.
	resume := func(nd *harness.Node) {
		t.Helper()
		harness.Eventually(t, 90*time.Second, func() error {
			present, err := sub.connect(nd, false)
			if err == nil && !present {
				t.Fatalf("%s: resumed on %s without its session", id, nd.Name)
			}
			return err
		})
	}
	resume(n2)
	// The claim back replaced the disowned copy, as in seed 52: ended
	// first (fenceGrace), it took no adoption's mark.
	if harness.CountLog(n2, `"session ended: its client id is owned by another node" client_id=`+id) > 0 {
		t.Fatalf("n2's copy of %s ended before the client came back: the test missed its path (machine too slow?)\nn2:\n%s", id, harness.GrepLog(n2, id))
	}
	owed := []string{"q1", "q2", "k1"}
	done := func(ps []string) func() bool {
		return func() bool {
			for _, p := range ps {
				if !sub.completed[p] {
					return false
				}
			}
			return true
		}
	}
	sub.resumed(n2, 30*time.Second, done([]string{"q1", "q2"}))
	// k1 is owed too; bounded, so that the rest of the path runs when it
	// is lost (its absence is reported below).
	_ = sub.read(time.Now().Add(10*time.Second), done(owed))
	// Durable: the completions' deletes are replicated before the SUBACK.
	sub.subscribe(topic+"/after", 2, 15*time.Second)
	keptOn(t, n2, id)

	if harness.CountLog(n2, `"client id claimed from another node" node=n2 client_id=`+id+" previous=n3") == 0 {
		t.Fatalf("n2 did not claim %s back from n3: the test missed its path\nn2:\n%s", id, harness.GrepLog(n2, id))
	}
	tc.Kill(n2, syscall.SIGKILL)
	resume(n1)
	publish("m2")
	sub.resumed(n1, 60*time.Second, done([]string{"m2"}))
	// Anything sent again comes before m2 (the record's queue first).
	var wrong []string
	for _, p := range append(append(warm, owed...), "m2") {
		if sub.got[p] != 1 {
			wrong = append(wrong, fmt.Sprintf("%s %d times", p, sub.got[p]))
		}
	}
	if len(wrong) > 0 {
		t.Fatalf("%s got %v at QoS 2, want each once\nn1:\n%s\nn2:\n%s", id, wrong, harness.GrepLog(n1, id), harness.GrepLog(n2, id, "test fault"))
	}
}
