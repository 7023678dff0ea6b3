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
	"github.com/roost-mqtt/roost/packet"
)

// staleNotRouted is what a node logs when it does not route a QoS 2
// PUBLISH from a connection of a session whose client id another node
// owns now (cluster.Node.CheckOwner).
const staleNotRouted = "QoS 2 publish not routed: its client id is owned by another node"

// TestReproStalePublish: test/jepsen TestClusterFull seed 46
// (bench/jepsen/RESULTS.md, "Session 18 (lead)" and "stalepub"): the
// persistent publisher pub0 sent #148 (QoS 2) to n3 8 ms after the
// nemesis paused n3, reconnected elsewhere, sent it again (DUP) and
// completed it there. When n3 resumed, its stale connection for pub0
// read the PUBLISH and routed it, under a nonce of its own, before n3
// fenced the session: ps0, ps1 and one member of each share group got
// #148 twice. Here: node A is paused with three QoS 2 PUBLISHes of a
// persistent publisher in its socket; the publisher resumes its session
// on B (whose claim reads it from the stream: A does not answer), sends
// them again with DUP and completes them; then A runs again. A
// persistent subscriber on C and a share group with a member on B and
// one on C must each get every message once.
//
// A does not lead the owner records' stream (staleRoles): a stale leader
// there answering the check is its stated limit (docs/cluster.md). A run
// in which A's nonce for the stale PUBLISH is not replicated within
// forward_timeout (seen when the fence came first) routes nothing
// either way: it passes on main too, and says so (the path missed).
func TestReproStalePublish(t *testing.T) {
	t.Parallel() // see harness.Main
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Config: stalePubConfig})
	n1, n2, n3 := staleRoles(t, tc) // A, B, C
	ps := harness.OriginSub(t, n3, "sp-ps", "sp/t")
	g2 := harness.OriginSub(t, n2, "sp-g2", "$share/sg/sp/t")
	g3 := harness.OriginSub(t, n3, "sp-g3", "$share/sg/sp/t")
	harness.AwaitOriginProbes(t, n1, "sp/t", ps, g2, g3)
	harness.AwaitOriginProbes(t, n2, "sp/t", ps, g2) // B serves the group from its own member
	stale, _, err := harness.RawPublisher(t, n1, "sp-pub", true)
	if err != nil {
		t.Fatal(err)
	}
	logs := func() string {
		var b strings.Builder
		for _, nd := range tc.Nodes {
			fmt.Fprintf(&b, "%s:\n%s\n", nd.Name, harness.GrepLog(nd, "sp-", "cluster:", "cluster node", "fenced", "settle"))
		}
		return b.String()
	}

	tc.Kill(n1, syscall.SIGSTOP)
	var pubs []*packet.Publish
	for i := uint16(1); i <= 3; i++ {
		p := &packet.Publish{QoS: 2, PacketID: i, Topic: "sp/t", Payload: []byte(fmt.Sprintf("m%d", i))}
		stale.Send(p) // into A's socket buffer: A reads it when it runs again
		pubs = append(pubs, p)
	}
	resendAll(t, n2, "sp-pub", pubs)

	want := []string{"m1", "m2", "m3"}
	type member struct {
		c  *harness.Client
		nd *harness.Node
	}
	subs := map[string][]*member{"sp-ps": {{ps, n3}}, "group sg": {{g2, n2}, {g3, n3}}}
	got := map[string]map[string]int{}
	tally := func(d time.Duration, done func() bool) {
		t.Helper()
		deadline := time.Now().Add(d)
		for {
			for name, ms := range subs {
				for _, m := range ms {
					take := func(p *paho.Publish) {
						s := string(p.Payload)
						if s == clustertest.Probe {
							return
						}
						t.Logf("%s got %s (packet id %d, DUP %v)", m.c.ID, s, p.PacketID, p.Duplicate())
						if !(p.Duplicate() && got[name][s] > 0) {
							if got[name] == nil {
								got[name] = map[string]int{}
							}
							got[name][s]++
						}
					}
					harness.DrainInbox(m.c, take)
					select {
					case <-m.c.Done():
						// Its node closed it (an op not replicated in
						// time while A was paused: outcome unknown):
						// the client resumes its session, as harness.AwaitOnce.
						harness.DrainInbox(m.c, take)
						t.Logf("%s: connection closed by %s; resuming the session", m.c.ID, m.nd.Name)
						m.c = harness.Resume(t, m.nd, m.c.ID, harness.OriginExpiry, 60*time.Second)
					default:
					}
				}
			}
			if done() || time.Now().After(deadline) {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	all := func() bool {
		for name := range subs {
			for _, m := range want {
				if got[name][m] == 0 {
					return false
				}
			}
		}
		return true
	}
	tally(30*time.Second, all)
	if !all() {
		t.Fatalf("the resends on %s did not reach every subscriber: %v\n%s", n2.Name, got, logs())
	}

	tc.Kill(n1, syscall.SIGCONT)
	// A reads the stale PUBLISHes before the connection ends (a
	// takeover applies what the client had sent: broker/takeover.go).
	if _, err := readUntilClosed(stale, 30*time.Second); err != nil {
		t.Fatalf("%s's stale connection: %v\n%s", n1.Name, err, logs())
	}
	// What A routed before that close goes to C ahead of what it
	// routes after it (one sender per node, in order): a probe. A quiet
	// spell then lets copies held or kept elsewhere come too.
	for i := 0; got["sp-ps"]["after"] == 0; i++ {
		if i == 20 {
			t.Fatalf("no probe from %s reached sp-ps after it resumed\n%s", n1.Name, logs())
		}
		probeFrom(t, n1, "sp-probe", "sp/t", "after")
		tally(time.Second, func() bool { return got["sp-ps"]["after"] > 0 })
	}
	tally(3*time.Second, func() bool { return false })
	for name := range subs {
		for _, m := range want {
			if n := got[name][m]; n != 1 {
				t.Errorf("%s got QoS 2 message %s %d times, want once", name, m, n)
			}
		}
	}
	if t.Failed() {
		t.Fatalf("deliveries: %v\n%s", got, logs())
	}
	if harness.CountLog(n1, "client_id=sp-pub type=PUBLISH") == 0 {
		t.Fatalf("%s never read the stale PUBLISHes (the path was missed)\n%s", n1.Name, logs())
	}
	if harness.CountLog(n1, staleNotRouted) == 0 {
		t.Logf("the run missed the path: %s read the stale PUBLISHes and routed none, but not for their owner:\n%s",
			n1.Name, harness.GrepLog(n1, "sp-pub"))
	}
}

// staleRoles returns the nodes of TestReproStalePublish: A, paused, which
// does not lead the owner records' stream; B and C, the others.
func staleRoles(t *testing.T, tc *harness.Cluster) (a, b, c *harness.Node) {
	t.Helper()
	i := (streamLeaderOf(t, tc, "KV_ROOST_OWN") + 1) % 3
	t.Logf("paused: %s (the owner records led elsewhere)", tc.Nodes[i].Name)
	return tc.Nodes[i], tc.Nodes[(i+1)%3], tc.Nodes[(i+2)%3]
}

// probeFrom publishes payload on topic at QoS 1 from client id on nd,
// again until nd acknowledges it with matching subscribers, within 60 s:
// a node just resumed may close connections or not know the interest
// yet.
func probeFrom(t *testing.T, nd *harness.Node, id, topic, payload string) {
	t.Helper()
	harness.Eventually(t, 60*time.Second, func() error {
		c, ack, err := harness.TryConnect(t, nd, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30})
		if err != nil {
			return err
		}
		defer c.Disconnect(&paho.Disconnect{})
		if ack.ReasonCode != 0 {
			return fmt.Errorf("%s: CONNACK 0x%02X", id, ack.ReasonCode)
		}
		rc, closed := c.TryPub(t, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload)}, harness.PublishBound)
		if closed || rc != 0 {
			return fmt.Errorf("%s: probe closed %v, PUBACK 0x%02X", id, closed, rc)
		}
		return nil
	})
}

// stalePubConfig is TestClusterFull's forward_timeout (15 s): the node
// that resumes waits for its stream writes past the elections its pause
// caused, as there.
const stalePubConfig = "cluster:\n  forward_timeout: 15s\n"

// resendAll resumes id's session on nd and sends pubs again with DUP,
// each until it is acknowledged and completed, as a client does after
// its connection was lost: a claim that reads the session from the
// stream may be closed without CONNACK while a stream elects a leader.
func resendAll(t *testing.T, nd *harness.Node, id string, pubs []*packet.Publish) {
	t.Helper()
	left := pubs
	harness.Eventually(t, 90*time.Second, func() error {
		c, ack, err := harness.RawPublisher(t, nd, id, false)
		if err != nil {
			return err
		}
		defer c.NC.Close()
		if !ack.SessionPresent {
			t.Fatalf("%s on %s: Session Present 0", id, nd.Name)
		}
		for len(left) > 0 {
			resend := *left[0]
			resend.Dup = true
			rc, closed := harness.ExchangeQoS2(t, c, &resend)
			switch {
			case closed:
				return fmt.Errorf("resend of %d on %s: closed, outcome unknown", resend.PacketID, nd.Name)
			case rc >= 0x80:
				t.Fatalf("resend of %d on %s: PUBREC 0x%02X", resend.PacketID, nd.Name, byte(rc))
			}
			left = left[1:]
		}
		return nil
	})
}

// readUntilClosed reads c until the server closes it, within d, and
// returns the packets it read.
func readUntilClosed(c interface {
	Read(time.Duration) (packet.Packet, error)
}, d time.Duration) ([]packet.Packet, error) {
	var ps []packet.Packet
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return ps, fmt.Errorf("not closed within %v (read %d packets)", d, len(ps))
		}
		p, err := c.Read(min(left, time.Second))
		if err != nil {
			var ne interface{ Timeout() bool }
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return ps, nil
		}
		ps = append(ps, p)
	}
}
