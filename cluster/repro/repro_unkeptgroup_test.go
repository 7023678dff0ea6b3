package repro_test

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"github.com/roost-mqtt/roost/internal/clustertest"
	"github.com/roost-mqtt/roost/packet"
)

// TestReproUnkeptGroup: a restarted node whose session streams are not
// open yet is forwarded a QoS 2 share-group message for its restored,
// unsettled member (an away copy), which it cannot keep in its held
// subject (keep: errNotReady), so it does not confirm the forward. Before,
// the broker had queued the message for the copy all the same, and the
// copy's QueuePut reached the stream once it opened; the publisher's
// resend went to a live member elsewhere, which claimed the group, and the
// member's session, claimed on another node, delivered the record's copy
// too: the group got it twice (test/jepsen TestClusterFull seed 108,
// bench/jepsen/RESULTS.md "g108"). Here uk-a, the group's member on n1, is
// offline when n1 is killed and restarted with streams-late (its session
// streams open 10 s after its ownership records); the persistent publisher
// on n2 publishes to the group until n1 refuses one; uk-b joins the group
// on n3, the publisher resends the refused message on n3, and uk-a
// resumes on n2 once n1's streams are open. The group must have each
// message once.
func TestReproUnkeptGroup(t *testing.T) {
	t.Parallel() // see harness.Main
	const prefix = "uk"
	// No adoption of n1's sessions while it is dead; a forward is given
	// up on well within the fault's window.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Config: "cluster:\n  adopt_after: 60s\n  forward_timeout: 4s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	group := paho.SubscribeOptions{Topic: "$share/ug/" + prefix + "/+", QoS: 2}
	a := harness.NewPersistent(t, n1, prefix+"-a", group)
	a.Disconnect(&paho.Disconnect{}) // offline on n1, its only member
	tc.WaitLog(n1, "client_id="+prefix+`-a reason="client disconnected normally"`, 1, harness.Wait)
	harness.Connect(t, n2, prefix+"-probe").AwaitInterest(t, prefix+"/probe")
	pc, _, err := harness.RawPublisher(t, n2, prefix+"-pub", true)
	if err != nil {
		t.Fatal(err)
	}

	tc.Kill(n1, syscall.SIGKILL)
	n1.Env = append(n1.Env, "ROOST_TEST_FAULT=streams-late=20s@n1")
	tc.Start(n1)
	tc.WaitLog(n1, "cluster: test fault: the session streams open late", 1, 60*time.Second)
	const ready = "cluster session streams ready"
	// Those n2 holds for n1 (before it sees n1 back) are confirmed. One
	// not confirmed that n1 did not refuse (n2's forward lost on the way
	// while n1 comes up: seen in 2 of 6 runs) is outcome unknown, at most
	// once; the first n1 refused is the test's.
	var refused *packet.Publish
	acked, unknown := map[string]bool{}, map[string]bool{}
	for i := 1; refused == nil; i++ {
		if harness.CountLog(n1, ready) >= 2 || i > 200 {
			t.Skipf("n1 refused none of %d messages before its session streams opened: the test missed its path\nn2:\n%s", i-1, harness.GrepLog(n2, "cluster:"))
		}
		pub := &packet.Publish{QoS: 2, PacketID: uint16(i), Topic: prefix + "/x", Payload: fmt.Appendf(nil, "m%d", i)}
		before := harness.CountLog(n1, "not confirming")
		rc, closed := harness.ExchangeQoS2(t, pc, pub)
		switch {
		case !closed && rc >= 0x80:
			t.Fatalf("PUBLISH %d: PUBREC 0x%02X", i, byte(rc))
		case !closed:
			acked[string(pub.Payload)] = true
			// Paced: until n2 sees n1 back it holds for n1 and
			// acknowledges at once, and twenty unpaced publishes went
			// by that way in a fresh-clone run (session 24) before n1
			// could refuse one. The window is n1's 20 s, not a count.
			time.Sleep(50 * time.Millisecond)
			continue
		}
		// n1 refuses within its forward_timeout of the forward's
		// arrival, twice that when it waits for the interest catch-up
		// first (passon.go): 10 s is a bound, not a sleep.
		for end := time.Now().Add(10 * time.Second); refused == nil && time.Now().Before(end); {
			if harness.CountLog(n1, "not confirming") > before {
				refused = pub
			} else {
				time.Sleep(50 * time.Millisecond)
			}
		}
		if refused == nil {
			unknown[string(pub.Payload)] = true
			if pc, _, err = harness.RawPublisher(t, n2, prefix+"-pub", false); err != nil {
				t.Fatal(err)
			}
		}
	}
	if harness.CountLog(n1, ready) >= 2 {
		t.Skipf("n1's session streams opened before the publish was refused: the test missed its path")
	}
	acked[string(refused.Payload)] = true // resent until acknowledged below

	b := harness.NewPersistent(t, n3, prefix+"-b", group)
	harness.ResendUntilAcknowledged(t, n3, prefix+"-pub", refused)
	tc.WaitLog(n1, ready, 2, 60*time.Second)
	back := harness.Resume(t, n2, prefix+"-a", harness.QueuedExpiry, 60*time.Second)

	// Until every message reached the group (60 s at most), then 3 s
	// more for second copies.
	got := map[string]int{} // "a m1": count
	all := func() bool {
		for m := range acked {
			if got["a "+m]+got["b "+m] == 0 {
				return false
			}
		}
		return true
	}
	deadline, quiet := time.Now().Add(60*time.Second), time.Time{}
	for end := deadline; time.Now().Before(end); {
		if quiet.IsZero() && all() {
			quiet = time.Now().Add(3 * time.Second)
			end = quiet
		}
		select {
		case p := <-back.In:
			got["a "+string(p.Payload)]++
		case p := <-b.In:
			got["b "+string(p.Payload)]++
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Logf("the group's copies: %v; n1's refusals:\n%s", got, harness.GrepLog(n1, "not confirming", "not given a forward"))
	msgs := map[string]bool{}
	for k := range got {
		msgs[k[2:]] = true
	}
	delete(msgs, clustertest.Probe) // QoS 1
	for m := range msgs {
		if n := got["a "+m] + got["b "+m]; n > 1 {
			t.Errorf("group ug got QoS 2 message %s %d times (%v), want once", m, n, got)
		}
	}
	for m := range acked {
		if got["a "+m]+got["b "+m] == 0 {
			t.Errorf("acknowledged QoS 2 message %s never reached group ug (%v)", m, got)
		}
	}
	t.Logf("acknowledged %d, outcome unknown %d", len(acked), len(unknown))
	if t.Failed() {
		t.Logf("n1:\n%s\nn2:\n%s\nn3:\n%s", harness.GrepLog(n1, prefix+"-", "cluster:"), harness.GrepLog(n2, prefix+"-", "cluster:"), harness.GrepLog(n3, prefix+"-", "cluster:"))
	}
}
