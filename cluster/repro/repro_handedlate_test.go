package repro_test

import (
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestReproHandedReadLate: a session moved live whose new owner loses the
// id before it read what the old owner's copy kept keeps those messages
// for its next owner (test/jepsen TestClusterFull seed 53 on main, session
// 21: ps3 lost pub1#618, pub0#571 and #572; bench/jepsen/RESULTS.md,
// "ps53"). There n2 moved ps3 from n3, which declined the finish (it had
// claimed the id back); n2 took what n3 handed over first and was to read
// what n3's copy kept from n3's held subject (keptBy), but it wrote its
// adoption (36.586) before that read, and lost the id (36.596) before the
// read (36.608). n1 then took the session from the stream and read the
// held subjects from the adoption's op on: the three messages n3's copy
// kept at 36.582-36.584 were passed over as in the session already.
//
// Here hl-sub's session is on n2, offline, and a publisher on n1 sends
// QoS 1 and 2 messages throughout; n1 sees n3's interest late
// (interest-late), so its messages reach n2's disowned copy after n2's
// answer to n3's claim, kept there. n3's move asks n2 to finish only once
// n2 is gone (finish-gone), and n2 is killed: n3 takes what n2 handed over
// first and adopts it, its read of n2's subject waiting until n3 lost the
// id (handed-late). The client then resumes on n1, whose claim n3 answers
// too late (release-late, held-pending): n1 reads the session from the
// stream. Every acknowledged message must reach the client, a QoS 2 one
// once (on this path, under load, n3's adoption's rollup went out without
// its purge, n3 having lost the id, and n1's read had q1-9 and q2-9 under
// n2's numbers and n3's: q2-9 twice, until readers started afresh there;
// TestReproUnpurgedAdoption, bench/jepsen/RESULTS.md "hrl").
func TestReproHandedReadLate(t *testing.T) {
	t.Parallel() // see harness.Main
	const id = "hl-sub"
	// No adoption by the janitor: the session moves by the client's
	// claims only; room for the elections after n2's kill.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "finish-gone=" + id + "@n3,interest-late=n3@n1,handed-late=" + id + "@n3,release-late=" + id + "@n3,held-pending=" + id + "@n3", Config: "cluster:\n  adopt_after: 60s\n  forward_timeout: 15s\nlimits:\n  max_queued: 100000\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	sub, pub := harness.PersistentPair(t, n2, n1, "hl", harness.QueuedExpiry)
	sub.Disconnect(&paho.Disconnect{}) // the session stays on n2, offline
	tc.WaitLog(n2, "client_id="+id+` reason="client disconnected normally"`, 1, harness.Wait)
	pp := &pacedPub{t: t, nd: n1, id: "hl-pub", prefix: "hl", pub: pub}
	for range 10 {
		pp.publish()
	}

	// n3 claims the id; n2 hands the session over live, its copy
	// disowned, and n1's messages reach that copy until n1's barrier.
	pp.claimUntilWaits(tc, n3, id, "until the previous owner is gone")
	kept := harness.CountLog(n2, `"cluster: message for a disowned copy kept in the held subject" node=n2 clients=[`+id+`]`)
	if kept == 0 {
		t.Fatalf("n2's disowned copy of %s kept nothing: the test missed the window it is about; n2:\n%s", id, harness.GrepLog(n2, "client_id="+id))
	}
	t.Logf("n2's disowned copy kept %d messages before n2 was killed", kept)
	tc.Kill(n2, syscall.SIGKILL)
	tc.WaitLog(n3, `"session moved here" node=n3 client_id=`+id, 1, 60*time.Second)

	// n3 has the session, its read of what n2's copy kept not done; the
	// client resumes on n1, which reads the session from the stream.
	c := pp.resume(n1, id)
	checkOwed(pp, c, n3, n1)
	// Every check above holds whichever way the session went; a run that
	// missed the traced path says so (a loaded machine can take another).
	switch {
	case harness.CountLog(n3, `"cluster: test fault: the reads from the previous owner's places wait until the id is lost here" node=n3 client_id=`+id) == 0:
		t.Skipf("n3's move of %s named no place to read from: the test missed its path; n3:\n%s", id, harness.GrepLog(n3, "client_id="+id))
	case harness.CountLog(n1, `"session moved here" node=n1 client_id=`+id+` from="replicated record"`) == 0:
		t.Skipf("n1 did not take %s from the stream: the test missed its path; n1:\n%s", id, harness.GrepLog(n1, "client_id="+id))
	}
}

// checkOwed requires every message pp had acknowledged at c, QoS 2 ones
// once, and nothing never acknowledged nor published: issue 17's terms.
// Unlike pacedPub.check it lets a QoS 1 message come again after the
// others, as MQTT allows: a stream claim on the publisher's node gets
// some again here with main's code and without this test's fault too (3
// of 4 runs, 2026-12-06, "q1-738" after all 1,478; RESULTS.md, "ps53"),
// which is not what this test is about.
func checkOwed(pp *pacedPub, c *harness.Client, from, to *harness.Node) {
	t := pp.t
	t.Helper()
	t.Logf("%d messages acknowledged, %d with unknown outcome", len(pp.want), pp.unknown)
	got, lost := harness.ReceiveAll(c, pp.want, 30*time.Second)
	if len(lost) > 0 {
		t.Fatalf("%d of %d acknowledged messages lost: %v\n%s:\n%s\n%s:\n%s", len(lost), len(pp.want), lost[:min(len(lost), 20)],
			from.Name, harness.GrepLog(from, "client_id="+pp.prefix, "cluster:", "restored"), to.Name, harness.GrepLog(to, "client_id="+pp.prefix, "cluster:"))
	}
	again := 0
	deadline := time.After(time.Second)
drain:
	for {
		select {
		case p := <-c.In:
			switch m := string(p.Payload); {
			case m == "probe":
			case m[1] == '1' && slices.Contains(pp.want, m):
				again++
				got[m]++
			default:
				t.Fatalf("%s: unexpected message %q on %q", c.ID, m, p.Topic)
			}
		case <-deadline:
			break drain
		}
	}
	if again > 0 {
		t.Logf("%d QoS 1 messages came again after the others (allowed)", again)
	}
	for m, n := range got {
		if m[1] == '2' && n != 1 {
			t.Errorf("QoS 2 message %s delivered %d times", m, n)
		}
	}
}
