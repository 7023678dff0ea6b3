package repro_test

import (
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// The fence window (issue 17, test/jepsen TestClusterFull round 4 seed
// 41: ps2 fenced on n2 for n1's claim, which gave up; n2's copy ended 8 s
// later and the 191 acknowledged messages it took meanwhile were lost).
// A node whose session is claimed elsewhere disowns its copy: the copy's
// ops stay in its own store. Until the copy ends, the other nodes still
// forward to it what its filters match, and when no handover is confirmed
// those messages were nowhere else. Now the node keeps each one in its
// held subject, marked for the session (keep.go), and whoever takes the
// session next reads it there.
//
// In both tests fw-sub's session lives on n2, offline. The client connects
// to n3, whose release request waits (delay-release) while n3 is paused:
// n2 fences its copy, and a publisher on n1 sends QoS 1 and 2 messages
// into the fence window, forwarded to n2 only. Every acknowledged message
// must reach the session where it resumes, in order, a QoS 2 one once.

// TestReproFenceWindowEnded: the copy ends (fenceGrace, no release
// request); n3 is killed and the client resumes on n1.
func TestReproFenceWindowEnded(t *testing.T) {
	t.Parallel() // see harness.Main
	tc, pub := fenceWindow(t, "fw-sub")
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	orderAcrossResume(t, n1, &pub, "fw-pub", n1, "fw-sub", harness.QueuedExpiry, func() {
		tc.WaitLog(n2, `"session ended: its client id is owned by another node" client_id=fw-sub`, 1, 60*time.Second)
		tc.Kill(n3, syscall.SIGKILL)
	})
	keptOn(t, n2, "fw-sub")
}

// TestReproFenceWindowLifted: the client resumes on n2 itself while the
// copy is fenced there (n3 killed first): n2's claim takes the session
// from the stream, in place of its copy, and must read what the copy
// took.
func TestReproFenceWindowLifted(t *testing.T) {
	t.Parallel() // see harness.Main
	tc, pub := fenceWindow(t, "fl-sub")
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	orderAcrossResume(t, n1, &pub, "fl-pub", n2, "fl-sub", harness.QueuedExpiry, func() {
		tc.Kill(n3, syscall.SIGKILL)
	})
	if harness.CountLog(n2, `"session ended: its client id is owned by another node" client_id=fl-sub`) > 0 {
		t.Logf("n2's copy ended before its claim came (a slow machine): the session was still read from the stream")
	}
	keptOn(t, n2, "fl-sub")
}

// keptOn checks that nd kept messages its disowned copy of id took: the
// test went through the window it is about.
func keptOn(t *testing.T, nd *harness.Node, id string) {
	t.Helper()
	if harness.CountLog(nd, `"cluster: messages a disowned copy took were kept in the held subject for its session" node=`+nd.Name+" client_id="+id) == 0 {
		t.Errorf("%s kept nothing its copy of %s took: the test missed the fence window\n%s:\n%s", nd.Name, id, nd.Name, harness.GrepLog(nd, "client_id="+id))
	}
}

// fenceWindow starts the cluster of the fence-window tests with id's
// session on n2, offline, subscribed to PREFIX/q1 and PREFIX/q2 (id is
// PREFIX-sub), has n3 claim it and stop before its release request, and
// returns once n2 fenced the copy, with PREFIX-pub connected to n1.
func fenceWindow(t *testing.T, id string) (*harness.Cluster, *harness.Client) {
	t.Helper()
	prefix := id[:len(id)-len("-sub")]
	// No adoption by the janitor (n3 has no session of id): the session
	// moves by the client's claims only; room for the elections after
	// n3's kill.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "delay-release=" + id + "@n3", Config: "cluster:\n  adopt_after: 60s\n  forward_timeout: 15s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	sub, pub := harness.PersistentPair(t, n2, n1, prefix, harness.QueuedExpiry)
	sub.Disconnect(&paho.Disconnect{}) // the session stays on n2, offline
	tc.WaitLog(n2, "client_id="+id+` reason="client disconnected normally"`, 1, harness.Wait)

	claimOn(t, tc, n3, id, harness.QueuedExpiry)
	tc.Kill(n3, syscall.SIGSTOP)
	tc.WaitLog(n2, `(owner records)" node=n2 client_id=`+id, 1, 60*time.Second)
	if harness.CountLog(n2, `"session ended: its client id is owned by another node" client_id=`+id) > 0 {
		t.Fatalf("n2's copy of %s ended before the test published into its fence window", id)
	}
	return tc, pub
}
