package cluster_test

import (
	"fmt"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestClusterDeadNodeSessionKeepsQueueing kills (kill -9) the node of a
// persistent subscriber and at once publishes QoS 1 and QoS 2 messages on
// another node, before the survivors adopt the dead node's sessions
// (cluster.adopt_after, 2 s here). Every message acknowledged to the
// publisher must reach the subscriber when it reconnects to the third
// node after the adoption, the QoS 2 ones once: the dead node's
// persistent interest keeps attracting messages (held for it in the
// replicated streams) until its sessions live elsewhere.
func TestClusterDeadNodeSessionKeepsQueueing(t *testing.T) {
	t.Parallel() // see harness_test.go
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Config: "cluster:\n  adopt_after: 2s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	expiry := uint32(600)
	const id = "held-sub"
	_, pub := harness.PersistentPair(t, n1, n2, "held", expiry)

	tc.Kill(n1, syscall.SIGKILL)
	// Published from the kill on: before, while and after n2 drops n1,
	// and before the adoption (2 s after that).
	var want []string
	unknown := 0
	// At least 3 s and 20 acknowledged: a hold whose partition stream
	// had its leader on n1 waits for an election, and its publisher gives
	// up (outcome unknown) meanwhile.
	start := time.Now()
	for i := 0; time.Since(start) < 3*time.Second || len(want) < 20 && time.Since(start) < 40*time.Second; i++ {
		for _, qos := range []byte{1, 2} {
			p := fmt.Sprintf("q%d-%d", qos, i)
			rc, closed := pub.TryPublish(t, &paho.Publish{Topic: fmt.Sprintf("held/q%d", qos), QoS: qos, Payload: []byte(p)})
			switch {
			case closed:
				// Outcome unknown: not owed, may arrive.
				unknown++
				// Closed without a CONNACK while the owner records elect a leader.
				harness.Eventually(t, 30*time.Second, func() error { return harness.Redial(t, n2, "held-pub", &pub) })
			case rc >= 0x80:
				t.Fatalf("publish %s refused: 0x%02X", p, rc)
			default:
				want = append(want, p)
			}
		}
		time.Sleep(20 * time.Millisecond) // a paced publisher, as the checker's
	}
	t.Logf("%d messages acknowledged after the kill, %d with unknown outcome", len(want), unknown)
	if len(want) < 20 {
		// Refusing everything would pass what follows: the survivors
		// must go on acknowledging.
		t.Fatalf("only %d messages acknowledged in 40 s after the kill; n2:\n%s", len(want), harness.GrepLog(n2, "cluster:", "not confirmed", "held"))
	}

	harness.Eventually(t, 40*time.Second, func() error {
		if harness.CountLog(n2, "client_id="+id)+harness.CountLog(n3, "client_id="+id) == 0 ||
			harness.CountLog(n2, `"session of a silent node adopted"`)+harness.CountLog(n3, `"session of a silent node adopted"`) == 0 {
			return fmt.Errorf("%s not adopted yet", id)
		}
		return nil
	})
	var back *harness.Client
	harness.Eventually(t, 30*time.Second, func() error {
		c, ack, err := harness.TryConnect(t, n3, &paho.Connect{ClientID: id, CleanStart: false, KeepAlive: 30,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
		if err != nil {
			return err
		}
		if ack.ReasonCode != 0 {
			return fmt.Errorf("CONNACK 0x%02X", ack.ReasonCode)
		}
		if !ack.SessionPresent {
			t.Fatalf("Session Present 0 on n3 after the adoption")
		}
		back = c
		return nil
	})
	got, lost := harness.ReceiveAll(back, want, 20*time.Second)
	if len(lost) > 0 {
		t.Fatalf("%d of %d acknowledged messages lost: %v\nn2:\n%s\nn3:\n%s", len(lost), len(want), lost[:min(len(lost), 20)],
			harness.GrepLog(n2, "client_id="+id, "cluster:", "silent"), harness.GrepLog(n3, "client_id="+id, "cluster:", "silent"))
	}
	back.None(t, time.Second)
	for p, n := range got {
		if p[1] == '2' && n != 1 {
			t.Errorf("QoS 2 message %s delivered %d times", p, n)
		}
	}
}

// TestClusterRestartedNodeSessionResumedElsewhere kills (kill -9) the
// node of a persistent subscriber while a publisher on another node sends
// QoS 1 and 2 (held for the dead node), restarts it, and resumes the
// session on the third node as soon as the restarted node hears the
// others again, before it has read the owner records: the claim finds a
// restored copy there that lacks what was held while it was down. Every
// acknowledged message must reach the subscriber, the QoS 2 ones once,
// and the restarted node must not keep a copy of the moved session
// (held.go, restoredGate).
func TestClusterRestartedNodeSessionResumedElsewhere(t *testing.T) {
	t.Parallel() // see harness_test.go
	// No adoption during the test: the session moves by the client's
	// claim only. The subscriber reads nothing until it resumes: its
	// queue must take everything published meanwhile, a thousand
	// messages and more on a busy machine (the default max_queued is
	// 1000: beyond it the broker drops by its policy, and a run saw
	// "dropping messages for session ... queue_full").
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Config: "cluster:\n  adopt_after: 60s\nlimits:\n  max_queued: 100000\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	expiry := uint32(600)
	const id = "restart-sub"
	sub, ack := harness.ConnectWith(t, n1, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
	if ack.ReasonCode != 0 {
		t.Fatalf("CONNACK 0x%02X", ack.ReasonCode)
	}
	sub.Sub(t, paho.SubscribeOptions{Topic: "rs/q1", QoS: 1}, paho.SubscribeOptions{Topic: "rs/q2", QoS: 2})
	pub := harness.Connect(t, n2, "restart-pub")
	pub.AwaitInterest(t, "rs/q1")
	pub.AwaitInterest(t, "rs/q2")
	joined := harness.CountLog(n1, "cluster node joined")

	tc.Kill(n1, syscall.SIGKILL)
	var (
		want     []string
		unknown  int
		back     <-chan *harness.Client // harness.ResumeInBackground's
		resuming bool
		restart  = time.Now().Add(2 * time.Second) // held for n1 meanwhile
		stop     time.Time                         // 2 s after the resume
		start    = time.Now()
	)
	for i := 0; stop.IsZero() || time.Now().Before(stop); i++ {
		if time.Since(start) > 90*time.Second {
			t.Fatalf("the session was not resumed on n3 within 90 s; n1:\n%s", harness.GrepLog(n1, "client_id="+id, "cluster:"))
		}
		if !restart.IsZero() && time.Now().After(restart) {
			tc.Start(n1)
			restart = time.Time{}
		}
		if restart.IsZero() && !resuming && harness.CountLog(n1, "cluster node joined") > joined {
			// n1 hears the others: its routes are up, its claims
			// answered, its owner records not read yet (seconds after
			// a kill, while the streams elect leaders).
			resuming = true
			back = harness.ResumeInBackground(t, n3, id, expiry)
		}
		if resuming && stop.IsZero() && len(back) > 0 {
			stop = time.Now().Add(2 * time.Second)
		}
		for _, qos := range []byte{1, 2} {
			p := fmt.Sprintf("q%d-%d", qos, i)
			rc, closed := pub.TryPublish(t, &paho.Publish{Topic: fmt.Sprintf("rs/q%d", qos), QoS: qos, Payload: []byte(p)})
			switch {
			case closed:
				unknown++ // outcome unknown: not owed, may arrive
				harness.Eventually(t, 30*time.Second, func() error { return harness.Redial(t, n2, "restart-pub", &pub) })
			case rc >= 0x80:
				t.Fatalf("publish %s refused: 0x%02X", p, rc)
			default:
				want = append(want, p)
			}
		}
		time.Sleep(20 * time.Millisecond) // a paced publisher, as the checker's
	}
	c, ok := <-back
	if !ok {
		t.Fatalf("%s not resumed with its session on n3 within 60 s", id)
	}
	t.Logf("%d messages acknowledged, %d with unknown outcome", len(want), unknown)
	got, lost := harness.ReceiveAll(c, want, 30*time.Second)
	if len(lost) > 0 {
		t.Fatalf("%d of %d acknowledged messages lost: %v\nn1:\n%s\nn2:\n%s\nn3:\n%s", len(lost), len(want), lost[:min(len(lost), 20)],
			harness.GrepLog(n1, "client_id="+id, "cluster:", "restored"), harness.GrepLog(n2, "cluster node", "holding a message", "not confirmed"),
			harness.GrepLog(n3, "client_id="+id, "cluster:"))
	}
	c.None(t, time.Second)
	for p, n := range got {
		if p[1] == '2' && n != 1 {
			t.Errorf("QoS 2 message %s delivered %d times", p, n)
		}
	}
	// Which way the session came: read from the stream because n1 had
	// not settled (the case this test is for), or moved from a settled n1.
	t.Logf("n1 gave the session up unsettled: %d; n3 took it from n1 live: %d",
		harness.CountLog(n1, "restored session claimed elsewhere before it was settled"),
		harness.CountLog(n3, `msg="session moved here" node=n3 client_id=`+id+` from=n1`))
}

// TestClusterDeadNodeShareGroupHeld kills (kill -9) the node that has
// every member of a share group, two persistent sessions, and publishes
// QoS 1 and 2 to the group on another node before the members come back:
// the group has no member on a live node, so the messages are held for
// the dead node's group. The members then resume on the two other nodes,
// each reading what was held: every acknowledged message must reach the
// group, the QoS 2 ones exactly once across both members (held.go,
// claimGroups).
func TestClusterDeadNodeShareGroupHeld(t *testing.T) {
	t.Parallel() // see harness_test.go
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Config: "cluster:\n  adopt_after: 60s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	expiry := uint32(600)
	members := []string{"grp-a", "grp-b"}
	for _, id := range members {
		c, ack := harness.ConnectWith(t, n1, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
		if ack.ReasonCode != 0 {
			t.Fatalf("%s: CONNACK 0x%02X", id, ack.ReasonCode)
		}
		c.Sub(t, paho.SubscribeOptions{Topic: "$share/g/sh/#", QoS: 2})
	}
	pub := harness.Connect(t, n2, "grp-pub")
	pub.AwaitInterest(t, "sh/x")

	tc.Kill(n1, syscall.SIGKILL)
	var want []string
	unknown := 0
	start := time.Now()
	for i := 0; time.Since(start) < 3*time.Second || len(want) < 20 && time.Since(start) < 40*time.Second; i++ {
		for _, qos := range []byte{1, 2} {
			p := fmt.Sprintf("q%d-%d", qos, i)
			rc, closed := pub.TryPublish(t, &paho.Publish{Topic: fmt.Sprintf("sh/q%d", qos), QoS: qos, Payload: []byte(p)})
			switch {
			case closed:
				unknown++ // outcome unknown: not owed, may arrive
				harness.Eventually(t, 30*time.Second, func() error { return harness.Redial(t, n2, "grp-pub", &pub) })
			case rc >= 0x80:
				t.Fatalf("publish %s refused: 0x%02X", p, rc)
			default:
				want = append(want, p)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("%d messages acknowledged after the kill, %d with unknown outcome", len(want), unknown)
	if len(want) < 20 {
		t.Fatalf("only %d messages acknowledged in 40 s after the kill", len(want))
	}
	a := harness.Resume(t, n2, members[0], expiry, 60*time.Second)
	b := harness.Resume(t, n3, members[1], expiry, 60*time.Second)
	got := map[string]int{}
	deadline := time.After(30 * time.Second)
	take := func(p *paho.Publish) {
		if s := string(p.Payload); s != "probe" {
			got[s]++
		}
	}
	for missing := func() int {
		n := 0
		for _, p := range want {
			if got[p] == 0 {
				n++
			}
		}
		return n
	}; missing() > 0; {
		select {
		case p := <-a.In:
			take(p)
		case p := <-b.In:
			take(p)
		case <-deadline:
			lost := slices.DeleteFunc(slices.Clone(want), func(s string) bool { return got[s] > 0 })
			t.Fatalf("%d of %d acknowledged messages never reached the group: %v\nn2:\n%s\nn3:\n%s", len(lost), len(want),
				lost[:min(len(lost), 20)], harness.GrepLog(n2, "cluster:", "grp-"), harness.GrepLog(n3, "cluster:", "grp-"))
		}
	}
	// Late copies would be duplicates: give them a second.
	for end := time.After(time.Second); ; {
		select {
		case p := <-a.In:
			take(p)
			continue
		case p := <-b.In:
			take(p)
			continue
		case <-end:
		}
		break
	}
	for p, n := range got {
		if p[1] == '2' && n != 1 {
			t.Errorf("QoS 2 message %s delivered %d times to the group", p, n)
		}
	}
}
