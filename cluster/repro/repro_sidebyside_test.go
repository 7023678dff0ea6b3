package repro_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestReproReleaseSideBySide: release requests for different client ids
// are answered side by side. A node answered them one at a time (one NATS
// subscription callback), so a request came out of the queue only once the
// request before it was answered; with that one's held wait (heldWaitMax,
// 2 s) and its own, it was answered about 4 s after it came, past its
// claimer's releaseTimeout (3 s). The claimer had read the session from the
// stream meanwhile, while the copy here still took messages, which the late
// answer then handed over to nobody (test/jepsen TestClusterFull: requests
// seconds late behind others' waits; the release-late fault).
//
// sb-a's and sb-sub's sessions live on n1, offline, and both of n1's
// answers wait their whole bound for held messages (held-pending). sb-a's
// client resumes on n2; once n1 waits in that answer, sb-sub's client
// resumes on n2 too while a paced publisher on n3 sends it QoS 1 and 2
// messages. Both claims must be answered within their bound, sb-sub must
// get every acknowledged message, in order, a QoS 2 one once, and sb-a its
// queued message.
func TestReproReleaseSideBySide(t *testing.T) {
	t.Parallel() // see harness.Main
	const a, id = "sb-a", "sb-sub"
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "held-pending=" + a + "@n1,held-pending=" + id + "@n1", Config: "cluster:\n  adopt_after: 60s\n  forward_timeout: 15s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	queuedOffline(t, tc, n1, n3, a, "sba/t")
	sub, pub := harness.PersistentPair(t, n1, n3, "sb", harness.QueuedExpiry)
	sub.Disconnect(&paho.Disconnect{}) // the session stays on n1, offline
	tc.WaitLog(n1, "client_id="+id+` reason="client disconnected normally"`, 1, harness.Wait)

	heldLine := func(client string) string {
		return `"cluster: test fault: held messages pending for a release request" node=n1 client_id=` + client
	}
	var aBack <-chan *harness.Client
	orderAcrossResume(t, n3, &pub, "sb-pub", n2, id, harness.QueuedExpiry, func() {
		aBack = harness.ResumeInBackground(t, n2, a, harness.QueuedExpiry)
		tc.WaitLog(n1, heldLine(a), 1, 30*time.Second)
	})
	c := <-aBack
	if c == nil {
		t.Fatalf("%s not resumed with its session on n2 within 60 s\nn1:\n%s\nn2:\n%s", a, harness.GrepLog(n1, a), harness.GrepLog(n2, a))
	}
	if _, lost := harness.ReceiveAll(c, []string{"queued"}, 30*time.Second); len(lost) > 0 {
		t.Errorf("%s never got its queued message\nn1:\n%s\nn2:\n%s", a, harness.GrepLog(n1, a), harness.GrepLog(n2, a))
	}
	for _, client := range []string{a, id} {
		if harness.CountLog(n2, `"cluster: previous owner did not confirm the takeover" node=n2 client_id=`+client) > 0 {
			t.Errorf("n1 answered %s's claim after n2's releaseTimeout\nn1:\n%s\nn2:\n%s", client, harness.GrepLog(n1, client), harness.GrepLog(n2, client))
		}
	}
	// The path: sb-sub's request was handled while sb-a's answer waited.
	aAnswered := firstLogLine(t, n1, `"client taken over by another node" node=n1 client_id=`+a+" ")
	idHeld := firstLogLine(t, n1, heldLine(id))
	if aAnswered == "" || idHeld == "" || idHeld > aAnswered {
		t.Fatalf("%s's release request was not handled while %s's waited: the test missed its path\nn1:\n%s\n%s",
			id, a, harness.GrepLog(n1, a), harness.GrepLog(n1, id))
	}
}

// firstLogLine returns nd's first log line containing s; "" for none. Lines
// begin time=RFC 3339 in UTC: two compare as their times.
func firstLogLine(t *testing.T, nd *harness.Node, s string) string {
	t.Helper()
	b, err := os.ReadFile(nd.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}
