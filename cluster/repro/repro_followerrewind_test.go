package repro_test

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"github.com/roost-mqtt/roost/internal/clustertest"
)

// TestReproFollowerRewind: a node's follower of a dead node's held
// subject, made to read again from further back by a session that joins
// it, gives the sessions it followed already nothing their own reads had
// passed. Before, only the floor by time (the session's last op) and the
// watch kept them out; a message the session's read ahead had handled
// was read for it again and, for a share group, claimed for it once more:
// its session then left by a live move, the delivery missed the group,
// and the message was passed on to the new owner as a new copy, which the
// client had completed already (test/jepsen TestClusterFull seed 245:
// g1m0 got pub2#195 twice, n2's follower of n1's subject rewound at
// 21:47:06.0 for ps2's move, its group passed on to n1 at 06.183).
//
// fr-a, the only member of share group fr, is on n3; n3 is killed, and
// n1's clean publisher's m-0 (QoS 2) is held for it. fr-a resumes on n2
// from the stream, whose read ahead of n3's held subject claims the group
// for it and delivers m-0, which the client completes. n3 comes back.
// fr-b, new on n1, resumes on n2 from the stream while n1 is paused; its
// own read of n3's subject finds nothing after its last op, so n2's
// follower reads again from fr-a's last op. claim-late holds a delivery
// claimed for fr-a there until fr-a left n2; fr-a's client then moves it
// live to n3. fr-a must not get m-0 again.
func TestReproFollowerRewind(t *testing.T) {
	t.Parallel() // see harness.Main
	const a, b, topic = "fr-a", "fr-b", "fr/x"
	// No adoption by the janitor (the sessions move by their clients'
	// claims only; n2's follower outlives the test); the hold for n3
	// waits for its partition stream's election after the kill.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "claim-late=" + a + "@n2", Config: "cluster:\n  adopt_after: 120s\n  forward_timeout: 15s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	ca := harness.NewPersistent(t, n3, a, paho.SubscribeOptions{Topic: "$share/fr/fr/#", QoS: 2})
	pub := harness.Connect(t, n1, "fr-pub")
	pub.AwaitInterest(t, topic)
	if err := ca.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatalf("disconnect %s: %v", a, err)
	}
	tc.WaitLog(n3, "client_id="+a+` reason="client disconnected normally"`, 1, harness.Wait)

	tc.Kill(n3, syscall.SIGKILL)
	harness.Eventually(t, 60*time.Second, func() error {
		if rc, closed := pub.TryPublish(t, &paho.Publish{Topic: topic, QoS: 2, Payload: []byte("m-0")}); closed {
			// The outcome is unknown: publish again on a new connection.
			if err := harness.Redial(t, n1, "fr-pub", &pub); err != nil {
				return err
			}
			return errors.New("connection closed before the PUBREC")
		} else if rc != 0 {
			return fmt.Errorf("PUBREC 0x%02X", rc)
		}
		return nil
	})

	ca = harness.Resume(t, n2, a, harness.QueuedExpiry, time.Minute)
	// claim-late holds the first claim made for fr-a on n2 until fr-a
	// left n2: meant for the follower's read again below, it takes m-0's
	// first delivery when the claim's read ahead did not reach m-0 and
	// n2's follower delivered it (a fresh clone's run, session 26: "fr-a:
	// no message within 1m0s", n2 reading m-0 for fr-a 9 ms after fr-a's
	// client left at the test's end). That run missed the path.
	const lateClaim = `"cluster: fault claim-late: held message claimed; delivering once the session left" node=n2 client_id=` + a
	if p, ok := nextOrLog(ca, n2, lateClaim, time.Minute); !ok {
		t.Skipf("n2's follower, not %s's read ahead, claimed m-0 for it (claim-late holds that delivery until %s leaves): the test missed its path; n2:\n%s",
			a, a, harness.GrepLog(n2, "client_id="+a, "peer=n3"))
	} else if p == nil || string(p.Payload) != "m-0" {
		t.Fatalf("%s: want m-0 within 1m0s, got %v", a, p)
	}
	tc.WaitLog(n2, "client_id="+a+" type=PUBCOMP", 1, 30*time.Second)
	if harness.CountLog(n2, `"session moved here" node=n2 client_id=`+a+` from="replicated record"`) == 0 {
		t.Skipf("n2 did not read %s from the stream: the test missed its path; n2:\n%s", a, harness.GrepLog(n2, "client_id="+a))
	}
	restored := harness.WatchRestored(n3, a)
	tc.Start(n3)
	restored.Wait(t, time.Minute, nil) // dropped, or fenced first (harness.RestoredCopy)

	// fr-b's last op is after m-0's hold: its read of n3's subject by
	// time finds nothing, and its join makes n2's follower read again
	// from the earliest time among its sessions, fr-a's.
	cb := harness.NewPersistent(t, n1, b, paho.SubscribeOptions{Topic: "fr-other/#", QoS: 1})
	if err := cb.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatalf("disconnect %s: %v", b, err)
	}
	tc.WaitLog(n1, "client_id="+b+` reason="client disconnected normally"`, 1, harness.Wait)
	tc.Kill(n1, syscall.SIGSTOP)
	resumed := false
	defer func() {
		if !resumed {
			tc.Kill(n1, syscall.SIGCONT)
		}
	}()
	harness.Resume(t, n2, b, harness.QueuedExpiry, time.Minute)
	tc.Kill(n1, syscall.SIGCONT)
	resumed = true
	if harness.CountLog(n2, `"session moved here" node=n2 client_id=`+b+` from="replicated record"`) == 0 {
		t.Skipf("n2 did not read %s from the stream: the test missed its path; n2:\n%s", b, harness.GrepLog(n2, "client_id="+b))
	}
	// n2's follower of n3's subject reads with both: m-0 is either
	// claimed for fr-a again (held by claim-late until fr-a left), or
	// read and given to neither.
	harness.Eventually(t, 30*time.Second, func() error {
		if harness.CountLog(n2, lateClaim) > 0 || readWithBoth(n2) {
			return nil
		}
		return fmt.Errorf("n2's follower of n3's held subject has not read with both sessions yet")
	})
	claimedAgain := harness.CountLog(n2, lateClaim) > 0

	// fr-a moves live to n3.
	ca.Disconnect(&paho.Disconnect{})
	ca = harness.Resume(t, n3, a, harness.QueuedExpiry, time.Minute)
	if claimedAgain {
		tc.WaitLog(n2, `"cluster: fault claim-late: the session left; delivering" node=n2 client_id=`+a, 1, 30*time.Second)
		harness.Eventually(t, 30*time.Second, func() error {
			if !readWithBoth(n2) {
				return fmt.Errorf("n2's read of m-0 with both sessions not done yet")
			}
			return nil
		})
	}
	if p, ok := nextWithin(ca, 3*time.Second); ok {
		t.Fatalf("%s got %q again on %s after it completed it on n2 (n2's follower claimed it again: %v); n2:\n%s\nn3:\n%s",
			a, p.Payload, p.Topic, claimedAgain, harness.GrepLog(n2, "client_id="+a, "peer=n3"), harness.GrepLog(n3, "client_id="+a))
	}
	t.Logf("n2's follower claimed m-0 for %s again: %v; n2's reads of n3's held subject and %s's adoption:\n%s", a, claimedAgain, a,
		harness.GrepLog(n2, "peer=n3"))
	if harness.CountLog(n3, `"session moved here" node=n3 client_id=`+a+` from=n2`) == 0 {
		t.Skipf("%s did not move live from n2 to n3: the test missed its path; n3:\n%s", a, harness.GrepLog(n3, "client_id="+a))
	}
}

// readWithBoth reports whether nd's follower of n3's held subject read a
// message with two sessions among its own.
func readWithBoth(nd *harness.Node) bool {
	for _, l := range strings.Split(harness.GrepLog(nd, `"cluster: message held for a node read" node=`+nd.Name+` peer=n3`), "\n") {
		if strings.HasSuffix(l, "ids=2") {
			return true
		}
	}
	return false
}

// nextOrLog returns c's next message that is not a probe, waiting up to
// d; false, at once, if line shows in nd's log first; nil if neither came.
func nextOrLog(c *harness.Client, nd *harness.Node, line string, d time.Duration) (*paho.Publish, bool) {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); {
		select {
		case p := <-c.In:
			if string(p.Payload) != clustertest.Probe {
				return p, true
			}
			continue
		case <-time.After(200 * time.Millisecond):
		}
		if harness.CountLog(nd, line) > 0 {
			return nil, false
		}
	}
	return nil, true
}

// nextWithin returns c's next message if one comes within d.
func nextWithin(c *harness.Client, d time.Duration) (*paho.Publish, bool) {
	var got *paho.Publish
	for deadline := time.Now().Add(d); got == nil && time.Now().Before(deadline); {
		harness.DrainInbox(c, func(p *paho.Publish) {
			if got == nil {
				got = p
			}
		})
		time.Sleep(20 * time.Millisecond)
	}
	return got, got != nil
}
