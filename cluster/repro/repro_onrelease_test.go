package repro_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestReproFenceDuringRelease: a release request and a fence after a loss
// of contact decide the end of the same session at once (test/jepsen
// TestClusterFull seed 42: ps2, 1,431 acknowledged messages lost). The
// node answering the request looked for the unread mark before its last
// wait for the session's held messages; the fence ended the session during
// that wait and set the mark, and the answer, finding no session, said
// "nothing to hand over": the claimer started the client afresh, Session
// Present 0, on a session the cluster had.
//
// fr-sub's session lives on home, offline, with a message queued. A third
// node (not the owner records' leader, which would answer the fence's read
// from its stale copy once resumed) is paused until home drops it, so home
// fences its sessions when it hears from it again. The client connects to
// the claimer; home's answer waits (held-fenced) and the paused node is
// resumed meanwhile: home's fence ends the session before the answer. The
// claimer must be told to read the stream: Session Present 1, and the
// queued message.
func TestReproFenceDuringRelease(t *testing.T) {
	t.Parallel() // see harness.Main
	const id = "fr-sub"
	tc, claimer, paused, home := homeWithThird(t, "held-fenced", id, "fr/t")

	tc.Kill(paused, syscall.SIGSTOP)
	defer tc.Kill(paused, syscall.SIGCONT)
	tc.WaitLog(home, `"cluster node gone: no heartbeat" node=`+home.Name+" peer="+paused.Name, 1, 60*time.Second)

	// Resumed once home's answer waits: home hears from it again and
	// fences its sessions, fr-sub's among them, during that wait.
	inWait := `"cluster: test fault: held messages pending until a fence" node=` + home.Name + " client_id=" + id
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); {
			if harness.CountLog(home, inWait) > 0 {
				paused.Resume(t)
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	resumeQueued(t, claimer, id, "claimed on "+claimer.Name+" while "+home.Name+"'s fence ended the session", home, claimer)
	// The session and its queued message are checked above whichever
	// way it went: a race missed is the machine's timing, not a fault.
	if harness.CountLog(home, inWait) == 0 ||
		harness.CountLog(home, `"session fenced: its client id was claimed by another node while this one was out of contact" node=`+home.Name+" client_id="+id) == 0 {
		t.Skipf("%s's fence did not end %s while the release request waited: the test missed the race\n%s:\n%s",
			home.Name, id, home.Name, harness.GrepLog(home, id))
	}
}

// TestReproReleaseInTime: a release request's waits share one bound, short
// of the claimer's releaseTimeout. Each of onRelease's two looks for the
// session's held messages waited heldWaitMax (2 s) of its own: an answer
// came after 4 s, the claimer had given up at 3 s and read the session
// from the stream, and what the old copy took from then until the late
// answer took it off (forwards to it, replicated to a stream the claimer
// had read already) reached neither (test/jepsen TestClusterTransports
// NodeKill: an answer after 3.7 s, 142 of 161 messages lost; held-pending
// makes both looks wait their whole bound).
//
// rb-sub's session lives on n1, offline; a paced publisher on n3 sends QoS
// 1 and 2 messages to it while the client resumes on n2. Every
// acknowledged message must reach it there, in order, a QoS 2 one once,
// and n2 must have had n1's answer (the session moved live).
func TestReproReleaseInTime(t *testing.T) {
	t.Parallel() // see harness.Main
	const id = "rb-sub"
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "held-pending=" + id + "@n1", Config: "cluster:\n  adopt_after: 60s\n  forward_timeout: 15s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	sub, pub := harness.PersistentPair(t, n1, n3, "rb", harness.QueuedExpiry)
	sub.Disconnect(&paho.Disconnect{}) // the session stays on n1, offline
	tc.WaitLog(n1, "client_id="+id+` reason="client disconnected normally"`, 1, harness.Wait)

	orderAcrossResume(t, n3, &pub, "rb-pub", n2, id, harness.QueuedExpiry, nil)
	if harness.CountLog(n1, `"cluster: session handed over before its held messages were applied" node=n1 client_id=`+id) == 0 {
		t.Fatalf("n1's answer did not wait for held messages: the test did not take the path of the fault\nn1:\n%s", harness.GrepLog(n1, id))
	}
	if harness.CountLog(n2, `"cluster: previous owner did not confirm the takeover" node=n2 client_id=`+id) > 0 {
		t.Errorf("n1 answered after n2's releaseTimeout\nn1:\n%s\nn2:\n%s", harness.GrepLog(n1, id), harness.GrepLog(n2, id))
	}
}

// ownersLeader returns the index of the node that last became the owner
// records' stream leader, from the engine's lines in the nodes' logs.
func ownersLeader(t *testing.T, tc *harness.Cluster) int {
	t.Helper()
	return streamLeaderOf(t, tc, "KV_ROOST_OWN")
}

// streamLeaderOf returns the index of the node that last became stream's
// leader, from the engine's lines in the nodes' logs.
func streamLeaderOf(t *testing.T, tc *harness.Cluster, stream string) int {
	t.Helper()
	line := "new stream leader for '$G > " + stream + "'"
	lead := -1
	harness.Eventually(t, 30*time.Second, func() error {
		latest := ""
		for i, nd := range tc.Nodes {
			b, err := os.ReadFile(nd.LogPath)
			if err != nil {
				return err
			}
			for _, l := range strings.Split(string(b), "\n") {
				// Lines begin time=RFC 3339 in UTC: they sort as strings.
				if strings.Contains(l, line) && l > latest {
					lead, latest = i, l
				}
			}
		}
		if lead < 0 {
			return errors.New("no node's log says it leads " + stream)
		}
		return nil
	})
	return lead
}

// TestReproFenceAfterAnswer: the other order of TestReproFenceDuringRelease
// (test/jepsen TestClusterFull seed 41: ps2, 6 acknowledged messages
// lost). The node answered the release request with the session (a live
// move), then its fence after a loss of contact ended the copy it had
// handed over, 11 ms later, before the move's finish: the claimer took
// what was handed over without what the copy got after the export (kept
// in the old node's held subject, which a live move does not read). A
// fence leaves a copy handed over to the claim the record names to that
// handover.
//
// fa-sub's session lives on home, offline, with a message queued; the
// paused node (not the owner records' leader) is dropped by home and the
// claimer. The client connects to the claimer, whose move asks home to
// finish only after the paused node is back (finish-late); once home
// answered, a message is published on home (its copy takes it), and the
// paused node is resumed: home fences its sessions. The resumed session
// must get both messages.
func TestReproFenceAfterAnswer(t *testing.T) {
	t.Parallel() // see harness.Main
	const id = "fa-sub"
	tc, claimer, paused, home := homeWithThird(t, "finish-late", id, "fa/t")
	pub := harness.Connect(t, home, id+"-pub2")

	tc.Kill(paused, syscall.SIGSTOP)
	defer tc.Kill(paused, syscall.SIGCONT)
	for _, nd := range []*harness.Node{home, claimer} {
		tc.WaitLog(nd, `"cluster node gone: no heartbeat" node=`+nd.Name+" peer="+paused.Name, 1, 60*time.Second)
	}
	back := harness.ResumeInBackground(t, claimer, id, harness.QueuedExpiry)
	tc.WaitLog(home, `"client taken over by another node" node=`+home.Name+" client_id="+id, 1, 60*time.Second)
	// The copy on home takes the message at once; its PUBACK waits for
	// the claimer, which holds it for the move until the move is done,
	// after the paused node's return: so it is published in the
	// background, and the node resumed once home's copy took it.
	acked := make(chan byte, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), harness.PublishBound+finishLateBound)
		defer cancel()
		rc := byte(0x80) // no answer, or the connection closed: not owed
		if r, err := pub.Publish(ctx, &paho.Publish{Topic: "fa/t", QoS: 1, Payload: []byte("after")}); err == nil {
			rc = r.ReasonCode
		}
		acked <- rc
	}()
	tc.WaitLog(home, `"cluster: message for a disowned copy kept in the held subject" node=`+home.Name+` clients=[`+id+`]`, 1, 30*time.Second)
	tc.Kill(paused, syscall.SIGCONT)
	// Whatever its PUBACK (under load the kept copy's append may time
	// out: outcome unknown), the copy took the message before its
	// export, so the move must bring it.
	select {
	case rc := <-acked:
		if rc >= 0x80 {
			t.Logf("publish on %s: PUBACK 0x%02X (or no answer); the copy took it all the same", home.Name, rc)
		}
	case <-time.After(harness.PublishBound + finishLateBound + 10*time.Second):
		t.Fatalf("publish on %s never answered", home.Name)
	}
	c := <-back
	if c == nil {
		t.Fatalf("%s not resumed with its session on %s within 60 s\n%s:\n%s", id, claimer.Name, claimer.Name, harness.GrepLog(claimer, id))
	}
	if _, lost := harness.ReceiveAll(c, []string{"queued", "after"}, 30*time.Second); len(lost) > 0 {
		t.Fatalf("%s never got %v\n%s:\n%s\n%s:\n%s", id, lost, home.Name, harness.GrepLog(home, id), claimer.Name, harness.GrepLog(claimer, id))
	}
	// Home's owner-record watcher can fence the copy on the claimer's
	// record before the paused node is back (20:22:28 in hunta32's first
	// pass, load 76): the copy is handed over all the same and the
	// messages checked above, but the fence this test is for never ran.
	if harness.CountLog(claimer, `"cluster: test fault: the move's finish waits for a dropped node's return" node=`+claimer.Name+" client_id="+id) == 0 ||
		harness.CountLog(home, `"cluster: fence: a copy handed over left to its handover" node=`+home.Name+" client_id="+id) == 0 {
		t.Skipf("the fence did not meet the handed-over copy (home fenced by its owner-record watcher first, at load): the test missed the path; both messages came\n%s:\n%s\n%s:\n%s",
			home.Name, harness.GrepLog(home, id), claimer.Name, harness.GrepLog(claimer, id))
	}
}

// finishLateBound is past finish-late's longest wait (60 s).
const finishLateBound = 70 * time.Second

// homeWithThird starts three nodes with fault (for id) on each, and puts
// id's session, offline with a message queued on topic, on home; claimer
// leads the owner records; paused, the third, is the one a test pauses
// (not the leader, which would answer a fence's read from its stale copy
// once resumed). No janitor (the paused node is not dead), and room for
// reads of the stream while a stream elects a leader.
func homeWithThird(t *testing.T, fault, id, topic string) (tc *harness.Cluster, claimer, paused, home *harness.Node) {
	t.Helper()
	// Every node may be the home: each takes the fault that names it.
	f := fault + "=" + id + "@"
	tc = harness.StartClusterSetup(t, 3, harness.Setup{Fault: f + "n1," + f + "n2," + f + "n3", Config: "cluster:\n  adopt_after: 120s\n  forward_timeout: 15s\n"})
	lead := ownersLeader(t, tc)
	claimer, paused, home = tc.Nodes[lead], tc.Nodes[(lead+1)%3], tc.Nodes[(lead+2)%3]
	queuedOffline(t, tc, home, claimer, id, topic)
	return tc, claimer, paused, home
}
