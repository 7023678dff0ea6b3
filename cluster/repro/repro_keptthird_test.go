package repro_test

import (
	"testing"

	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestReproKeptCopyThirdNode: a share group's messages that a node's
// fenced copy of a member kept (keep.go) reach the member when its
// session moves live between two other nodes. TestReproKeptCopyMoveIn's
// path, but the live move ends on a third node: neither the copy's node
// nor the owner that moves the session out ever read the copy node's
// held subject for it (bench/jepsen/RESULTS.md "g51", what is left 1:
// seed 51's 21 kept copies for g0m0 had been lost the same way had g0m0
// gone from n1 to n2 instead of back to n3).
//
// Here km3-sub, the group's only member, is offline on n3; n3 is paused
// and the client resumes on n1 (its claim reads the stream), then on n2
// (a live move), and goes offline there; n3 runs again and fences its
// copy; n3's publisher sends QoS 1 and 2, which n3 gives its copy (the
// group's only member there) and keeps; the client resumes on n1, which
// claims it from n2: a live move. Every acknowledged message must reach
// it, QoS 2 once.
func TestReproKeptCopyThirdNode(t *testing.T) {
	t.Parallel() // see harness.Main
	const id = "km3-sub"
	tc, pp := keptCopyFenced(t, "km3")
	n1, n3 := tc.Nodes[0], tc.Nodes[2]
	// The client resumes on n1: n1 claims the id from n2, which hands
	// the offline session over live; n3 takes no part in the move.
	c := pp.resume(n1, id)
	// The messages are owed whichever way the session went: checked
	// before a missed path skips.
	pp.check(c, n3, n1)
	if t.Failed() {
		return
	}
	const kept = `"cluster: message for a disowned copy kept in the held subject" node=n3 clients=[` + id + `]`
	if harness.CountLog(n3, kept) == 0 || harness.CountLog(n1, `"session moved here" node=n1 client_id=`+id+` from=n2`) == 0 {
		t.Skipf("n3 kept nothing for %s's fenced copy, or the session did not come to n1 from n2 by a live move: the test missed its path; n3:\n%s",
			id, harness.GrepLog(n3, "client_id="+id))
	}
	t.Logf("n3 kept %d messages for %s's fenced copy; n1: %s", harness.CountLog(n3, kept), id,
		harness.GrepLog(n1, "client_id="+id, "kept"))
}
