package cluster_test

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"github.com/roost-mqtt/roost/internal/clustertest"
	"github.com/roost-mqtt/roost/internal/netfault"
)

// TestClusterPartitionPersistent: the persistent-session row of the
// promise table for a network partition that drops packets (a pulled
// cable, not a rejecting firewall: TestClusterRejectingCutIsSafe). n3 is
// cut off with a persistent session connected to it; its client can still
// reach it, and, as a client of a phone app would, also the majority.
//
//   - n3 alone has no quorum: a QoS 1 publish for the session there is not
//     acknowledged as kept, and a new persistent session is not accepted;
//   - the majority holds what is published for the session while n3 is
//     silent, adopts the session after adopt_after and publishes its will
//     once;
//   - the client, reconnecting on the majority during the cut, gets Session
//     Present and every QoS 1/2 message the majority acknowledged, QoS 2
//     once, whether acknowledged before the drop, between the drop and the
//     adoption, or after;
//   - after the heal n3 takes its stale connection over (DISCONNECT 0x8E)
//     and messages from n3's clients reach the session again.
func TestClusterPartitionPersistent(t *testing.T) {
	t.Parallel() // see harness_test.go
	nf := netfault.Namespace(t, clustertest.BinEnv+"="+clustertest.Binary(t, false))
	if nf == nil {
		return
	}
	tc := harness.StartCluster(t, 3)
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	wills := harness.Connect(t, n2, "pp-wills")
	wills.Sub(t, paho.SubscribeOptions{Topic: "pp/will", QoS: 1})
	expiry := uint32(harness.QueuedExpiry)
	stale, ack := harness.ConnectWith(t, n3, &paho.Connect{ClientID: "pp-sub", CleanStart: true, KeepAlive: 120,
		Properties:  &paho.ConnectProperties{SessionExpiryInterval: &expiry},
		WillMessage: &paho.WillMessage{Topic: "pp/will", QoS: 1, Payload: []byte("pp-sub")}})
	if ack.ReasonCode != 0 {
		t.Fatalf("CONNACK 0x%02X", ack.ReasonCode)
	}
	stale.Sub(t, paho.SubscribeOptions{Topic: "pp/q1", QoS: 1}, paho.SubscribeOptions{Topic: "pp/q2", QoS: 2})
	// A persistent session on the majority, which n3's clients publish to.
	maj := harness.NewPersistent(t, n1, "pp-maj", paho.SubscribeOptions{Topic: "pp/m", QoS: 1})
	pub1 := harness.Connect(t, n1, "pp-pub1")
	pub1.AwaitInterest(t, "pp/q1")
	pub1.AwaitInterest(t, "pp/q2")
	pub3 := harness.Connect(t, n3, "pp-pub3")
	pub3.AwaitInterest(t, "pp/m")
	harness.DrainInbox(maj, func(*paho.Publish) {})

	if err := nf.Partition(ips([]*harness.Node{n1, n2}), ips([]*harness.Node{n3})); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()

	// The majority's publisher goes on through the cut, n3's drop and the
	// session's adoption (its will), and ten publishes past it. Each is
	// acknowledged (owed to the session) or its connection is closed
	// (outcome unknown: not owed); none may be refused.
	var owed []string
	willAt := time.Duration(0)
	after := 0
	for i := 0; i < 400 && after < 10; i++ {
		payload, rc, closed := publishMixed(t, n1, "pp-pub1", &pub1, "pp", "maj", i)
		switch {
		case closed:
		case rc != 0:
			t.Errorf("%s on the majority %v after the cut: 0x%02X, want 0x00 (held for the session)",
				payload, time.Since(cut).Round(time.Millisecond), rc)
		default:
			owed = append(owed, payload)
		}
		if willAt == 0 {
			select {
			case p := <-wills.In:
				if string(p.Payload) != "pp-sub" {
					t.Fatalf("will %q, want pp-sub's", p.Payload)
				}
				willAt = time.Since(cut)
			default:
				time.Sleep(100 * time.Millisecond) // a steady trickle, not a flood
			}
		} else {
			after++
		}
	}
	if willAt == 0 {
		t.Fatal("the majority never adopted the cut-off node's session (no will)")
	}
	t.Logf("will published %v after the cut; %d messages acknowledged for the session", willAt.Round(time.Millisecond), len(owed))

	t.Run("MinorityAcknowledgesNothingForPersistentSessions", func(t *testing.T) {
		refused := func(topic, payload, whose string) {
			rc, closed := pub3.TryPublish(t, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload)})
			if !closed && rc < 0x80 {
				t.Errorf("QoS 1 publish on the minority for %s: PUBACK 0x%02X, want a failure code or the connection closed", whose, rc)
			}
			if closed {
				eventuallyAssigned(t, n3, &pub3) // an id the server assigns needs no quorum
			}
		}
		refused("pp/q1", "on-n3", "its own node's persistent session")
		// Nor for the majority's persistent session: n3 dropped its
		// node, and cannot hold for it without a quorum. (Before,
		// PUBACK 0x10, and the message was lost for the session.)
		refused("pp/m", "to-maj", "the majority's persistent session")
		expectUnclaimed(t, n3, &paho.Connect{ClientID: "pp-new3", CleanStart: true, KeepAlive: 30,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}, harness.PartitionBound)
	})

	// The client comes back on the majority while its old connection to
	// n3 is still up.
	back := harness.Resume(t, n1, "pp-sub", expiry, harness.PartitionBound)
	t.Run("SessionOnTheMajorityHasEveryAcknowledgedMessage", func(t *testing.T) {
		checkOwed(t, back, owed, nil)
	})

	healTakesOver(t, nf, stale)
	t.Run("AfterTheHeal", func(t *testing.T) {
		var last []string
		harness.Eventually(t, harness.PartitionBound, func() error {
			payload := fmt.Sprintf("n3-%d", len(last))
			rc, closed := pub3.TryPublish(t, &paho.Publish{Topic: "pp/q2", QoS: 2, Payload: []byte(payload)})
			if closed {
				harness.Eventually(t, harness.PartitionBound, func() error { return harness.Redial(t, n3, "pp-pub3", &pub3) })
				return fmt.Errorf("%s: connection closed", payload)
			}
			if rc != 0 {
				return fmt.Errorf("%s from the healed node: 0x%02X", payload, rc)
			}
			last = append(last, payload)
			return nil
		})
		checkOwedResuming(t, back, last, func(p string) bool { return strings.HasPrefix(p, "n3-") },
			func() *harness.Client { return harness.Resume(t, n1, "pp-sub", expiry, harness.PartitionBound) })
		wills.None(t, time.Second)
		published := 0
		for _, nd := range tc.Nodes {
			published += harness.CountLog(nd, `"publishing will" client_id=pp-sub`)
		}
		if published != 1 {
			t.Errorf("pp-sub's will published %d times across the nodes, want 1", published)
		}
	})
}

// publishMixed publishes PREFIX-i through *pub (client id id on nd): on
// TOPICS/q1 at QoS 1 for an even i, on TOPICS/q2 at QoS 2 for an odd one.
// It returns the payload and the acknowledgement's reason code, or closed
// when the node closed the connection instead (outcome unknown), after
// dialling id again.
func publishMixed(t *testing.T, nd *harness.Node, id string, pub **harness.Client, topics, prefix string, i int) (payload string, rc byte, closed bool) {
	t.Helper()
	topic, qos := topics+"/q1", byte(1)
	if i%2 == 1 {
		topic, qos = topics+"/q2", 2
	}
	payload = fmt.Sprintf("%s-%d", prefix, i)
	rc, closed = (*pub).TryPublish(t, &paho.Publish{Topic: topic, QoS: qos, Payload: []byte(payload)})
	if closed {
		harness.Eventually(t, harness.PartitionBound, func() error { return harness.Redial(t, nd, id, pub) })
	}
	return payload, rc, closed
}

// checkOwed reads c's messages until every payload of owed came, then until
// it is quiet for a second, and fails t for an owed one missing or a QoS 2
// message that came twice. Messages of which want says false (nil: all
// count) and probes are skipped: what an earlier step left unacknowledged
// may come.
func checkOwed(t *testing.T, c *harness.Client, owed []string, want func(string) bool) {
	t.Helper()
	checkOwedResuming(t, c, owed, want, nil)
}

// checkOwedResuming is checkOwed for a client whose node may close its
// connection meanwhile (right after a heal its partition stream may not
// confirm the session's ops in time: outcome unknown, the client
// resumes): again, when not nil, resumes the session, as a client does.
func checkOwedResuming(t *testing.T, c *harness.Client, owed []string, want func(string) bool, again func() *harness.Client) {
	t.Helper()
	left := map[string]bool{}
	for _, p := range owed {
		left[p] = true
	}
	seen := map[string]int{}
	take := func(p *paho.Publish) {
		s := string(p.Payload)
		if s == "probe" || want != nil && !want(s) {
			return
		}
		seen[s]++
		if seen[s] > 1 && p.QoS == 2 {
			t.Errorf("%s: QoS 2 %q delivered %d times", c.ID, s, seen[s])
		}
		delete(left, s)
	}
	deadline := time.Now().Add(harness.PartitionBound)
	done := c.Done()
	if again == nil {
		done = nil
	}
	for len(left) > 0 && time.Now().Before(deadline) {
		select {
		case p := <-c.In:
			take(p)
		case <-done:
			harness.DrainInbox(c, take)
			t.Logf("%s: the node closed the connection; resuming", c.ID)
			c = again()
			done = c.Done()
		case <-time.After(time.Until(deadline)):
		}
	}
	if len(left) > 0 {
		var missing []string
		for _, p := range owed {
			if left[p] {
				missing = append(missing, p)
			}
		}
		t.Errorf("%s: %d of %d acknowledged messages never came: %v", c.ID, len(missing), len(owed), missing)
	}
	for range cap(c.In) + 1 {
		select {
		case p := <-c.In:
			take(p)
		case <-time.After(time.Second):
			return
		}
	}
}

// TestClusterPausedNodePersistent: a node paused (SIGSTOP, a VM frozen)
// past the heartbeat timeout, not long enough for its sessions to be
// adopted. The others hold what they publish for its persistent session
// meanwhile (acknowledged once replicated, 0x00 and not 0x10 No matching
// subscribers), and when it resumes its client, still connected to it,
// gets every one of those messages, QoS 2 once. Before, they were
// acknowledged 0x10 and lost for the session.
func TestClusterPausedNodePersistent(t *testing.T) {
	t.Parallel() // see harness_test.go
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Config: "cluster:\n  adopt_after: 120s\n"})
	n1, n3 := tc.Nodes[0], tc.Nodes[2]
	sub, pub := harness.PersistentPair(t, n3, n1, "pz", harness.QueuedExpiry)
	harness.DrainInbox(sub, func(*paho.Publish) {})

	goneBefore := harness.CountLogAll(n1, "cluster node gone", "peer=n3")
	tc.Kill(n3, syscall.SIGSTOP)
	resumed := false
	defer func() {
		if !resumed {
			tc.Kill(n3, syscall.SIGCONT) // the cluster's cleanup stops it
		}
	}()
	harness.Eventually(t, harness.PartitionBound, func() error {
		if harness.CountLogAll(n1, "cluster node gone", "peer=n3") == goneBefore {
			return fmt.Errorf("n1 has not dropped the paused n3 yet")
		}
		return nil
	})
	var owed []string
	for i := range 20 {
		payload, rc, closed := publishMixed(t, n1, "pz-pub", &pub, "pz", "held", i)
		switch {
		case closed:
		case rc != 0:
			t.Errorf("%s for the paused node's persistent session: 0x%02X, want 0x00 (held for it)", payload, rc)
		default:
			owed = append(owed, payload)
		}
	}
	if len(owed) == 0 {
		t.Fatal("nothing acknowledged while n3 was paused")
	}
	tc.Kill(n3, syscall.SIGCONT)
	resumed = true
	checkOwed(t, sub, owed, func(p string) bool { return strings.HasPrefix(p, "held-") })
	// Routed to it again once it is heard.
	harness.Eventually(t, harness.PartitionBound, func() error {
		rc, closed := pub.TryPublish(t, &paho.Publish{Topic: "pz/q1", QoS: 1, Payload: []byte("probe")})
		if closed {
			harness.Redial(t, n1, "pz-pub", &pub)
			return fmt.Errorf("probe: connection closed")
		}
		if rc != 0 {
			return fmt.Errorf("probe: 0x%02X", rc)
		}
		for len(sub.In) > 0 {
			if p := <-sub.In; string(p.Payload) == "probe" {
				return nil
			}
		}
		return fmt.Errorf("the resumed node's session is not reached yet")
	})
}
