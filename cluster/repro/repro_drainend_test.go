package repro_test

import (
	"testing"
	"time"

	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestReproDrainEmptyRead: a restarted node's follower of what was held
// for it while it was dead took a read that came back empty for the end
// of what was held. A FetchNoWait that its partition stream's consumer
// does not answer (its leader being elected after the restart) comes back
// after a second with neither a message nor an error (nats.go v1.56), as
// one that found nothing does: the restored sessions settled with nothing
// applied, their catch-up ended on the next empty read, and a claim from
// another node moved the session live, which carries only what the copy
// has and reads no held subject: everything held for n1 while it was
// dead was lost (bench/jepsen/RESULTS.md, heldempty's "What is left" 1).
// Now an empty read short of the subject's last message asks the
// consumer for its ack floor (held.go heldReadEnd).
//
// n1, the subscriber's node, is killed while a publisher on n2 sends QoS
// 1 and 2 (n2 holds them for n1); n1 is restarted with held-empty: for
// 8 s from its follower's first read, every read comes back empty. Once
// n1 settled, the client resumes on n3, whose claim n1 answers with the
// session. Every acknowledged message must reach it, a QoS 2 one once.
func TestReproDrainEmptyRead(t *testing.T) {
	t.Parallel() // see harness.Main
	const id = "de-sub"
	tc, pp := restartWithFault(t, "de", "held-empty=8s@n1", "restored sessions settled")
	n1, n3 := tc.Nodes[0], tc.Nodes[2]
	if harness.CountLog(n1, "cluster: test fault: reads of what is held for this node come back empty") == 0 {
		t.Fatalf("n1's held reads did not come back empty (the test's fault); n1:\n%s", harness.GrepLog(n1, "cluster:"))
	}
	awaitKnown(t, pp, n3, n1)
	c := pp.resume(n3, id)
	pp.check(c, n1, n3)
	if harness.CountLog(n3, `msg="session moved here" node=n3 client_id=`+id+` from=n1`) == 0 {
		t.Skipf("n3 did not take %s from n1 live: the test missed its path (the messages came); n3:\n%s", id, harness.GrepLog(n3, "client_id="+id))
	}
}

// TestReproDrainCutCatchUp: a restarted node's restored session, settled,
// catches up with what the others held for the node after the read that
// settled it; a release request for it waits for that catch-up, but only
// heldWaitMax (2 s). Cut, the session was handed over live without what
// the catch-up read later, which then went to no session here, and the
// new owner read no held subject: lost, and a share group's messages
// claimed for it too (RESULTS.md, heldempty's "What is left" 2: "session
// handed over before its held messages were applied"). Now the answer
// names this node's own held subject, from the first message not applied
// here, for the new owner to read on from (heldPositions, followHanded).
//
// n1, the subscriber's node, is killed while a publisher on n2 sends QoS
// 1 and 2, and restarted with settle-wait: once settled, it announces the
// session's keys, and its catch-up reads, only 8 s later, and n2 holds
// for n1 meanwhile. The client resumes on n3 as soon as n1 settled, so
// that n1's wait for the catch-up is cut. Every acknowledged message
// must reach it, a QoS 2 one once.
func TestReproDrainCutCatchUp(t *testing.T) {
	t.Parallel() // see harness.Main
	const id = "dc-sub"
	tc, pp := restartWithFault(t, "dc", "settle-wait=8s@n1", "the settled sessions' keys are announced late")
	n1, n3 := tc.Nodes[0], tc.Nodes[2]
	settled := logTime(t, n1, "the settled sessions' keys are announced late")
	awaitKnown(t, pp, n3, n1)
	c := pp.resume(n3, id)
	pp.check(c, n1, n3)
	if harness.CountLog(n3, `msg="session moved here" node=n3 client_id=`+id+` from=n1`) == 0 ||
		harness.CountLog(n1, `"cluster: session handed over before its held messages were applied" node=n1 client_id=`+id) == 0 {
		t.Skipf("n1 did not hand %s over live with its wait for the catch-up cut: the test missed its path (the messages came); n1:\n%s\nn3:\n%s",
			id, harness.GrepLog(n1, "client_id="+id), harness.GrepLog(n3, "client_id="+id))
	}
	t.Logf("held places handed over: n1: %s; n3: %s", harness.GrepLog(n1, "held subjects named for the new owner"),
		harness.GrepLog(n3, "held subjects read on from the previous owner's places"))
	if countLogAfter(t, tc.Nodes[1], settled, `holding a message for a dropped node's persistent sessions" node=n2 peer=n1`) == 0 {
		t.Skipf("n2 held nothing for n1 after n1 settled (%s): the test missed its path (the messages came)", settled.Format(time.StampMilli))
	}
}

// awaitKnown publishes until on has heard from nd since nd's restart (a
// claim of a node it does not know reads the stream instead of asking it).
func awaitKnown(t *testing.T, pp *pacedPub, on, nd *harness.Node) {
	t.Helper()
	for start := time.Now(); harness.CountLog(on, `msg="cluster node joined" node=`+on.Name+` peer=`+nd.Name) < 2; {
		if time.Since(start) > 30*time.Second {
			t.Fatalf("%s did not hear from %s again within 30 s; %s:\n%s", on.Name, nd.Name, on.Name, harness.GrepLog(on, "peer="+nd.Name))
		}
		pp.publish()
	}
}
