package repro_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestReproGroupSwapOrder: the two members of a share group swap nodes
// live at once, m0 from n1 to n2 and m1 from n2 to n1, while a
// publisher on n3 sends to the group without waiting for each
// acknowledgement: QoS 1, and QoS 1 and 2 by turns (a QoS 2 message held
// for a move holds its publisher's next ones back until the adoption, as
// the node waits to confirm it before its PUBREC, so the second form's
// window carries few messages). Each node then had a disowned copy of
// one member (an away key) and the other member moving in; with both
// nodes announcing the away key nobody was left out, and n3 gave each
// node turns. n2's turns went
// into m1's disowned copy while n2's own move in of m0 waited for
// n1's answer, and reached m1 in that copy's export, which n1's
// adoption delivered before what n1 had held for m1 from the same
// publisher: out of order [MQTT-4.6.0-5] (test/jepsen TestClusterFull
// seed 44, session 21: g0m1 got pub0#681 and #683 from n2's copy before
// #680, #682 and #684, held by n1). Here n1's answer for m0 comes
// 1.5 s late (steps-late) and n1's move of m1 asks for its finish
// 1.5 s late (finish-slow), so the window is seconds long. Each member's
// first deliveries must keep publication order, and every message must
// reach one of them.
func TestReproGroupSwapOrder(t *testing.T) {
	t.Parallel() // see harness.Main
	for _, tt := range []struct {
		name   string
		prefix string
		qos2   bool
	}{{"qos1", "sw", false}, {"qos12", "sv", true}} {
		t.Run(tt.name, func(t *testing.T) {
			if !tt.qos2 {
				// About 1 run in 10 at load 20-35 (paho26: 2 of 18).
				harness.OpenWindow(t, "a swap's away keys can give the old copy a turn after the claimer's, and QoS 1 reaches the member out of order (bench/jepsen/RESULTS.md paho26, What is left 1; docs/cluster.md)")
			}
			t.Parallel()
			testGroupSwapOrder(t, tt.prefix, tt.qos2)
		})
	}
}

func testGroupSwapOrder(t *testing.T, prefix string, qos2 bool) {
	m0, m1 := prefix+"-m0", prefix+"-m1"
	// forward_timeout 15 s, not 5: at load 25 n1 could not replicate a
	// forwarded message's session ops within 5 s (its partition stream
	// without quorum), and n3 closed the publisher's connection, the
	// outcome of its messages in flight unknown (what the cluster
	// promises), which this test cannot check (bench/jepsen/RESULTS.md
	// paho26).
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "steps-late=" + m0 + "@n1,finish-slow=" + m1 + "@n1", Config: "cluster:\n  forward_timeout: 15s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	sub := paho.SubscribeOptions{Topic: "$share/" + prefix + "/" + prefix + "/#", QoS: 2}
	old0 := harness.NewPersistent(t, n1, m0, sub)
	old1 := harness.NewPersistent(t, n2, m1, sub)
	pub := harness.Connect(t, n3, prefix+"-pub")
	pub.AwaitInterest(t, prefix+"/t")
	got := map[string][]string{}
	take := func(id string) func(*paho.Publish) {
		return func(p *paho.Publish) {
			if s := string(p.Payload); s != "probe" {
				got[id] = append(got[id], s)
			}
		}
	}
	qos := func(i int) byte {
		if qos2 && i%2 == 1 {
			return 2
		}
		return 1
	}
	sent := 0
	send := func() {
		publishAsync(t, pub, n3, &paho.Publish{Topic: prefix + "/t", QoS: qos(sent), Payload: []byte(fmt.Sprintf("%06d", sent))})
		sent++
		time.Sleep(20 * time.Millisecond)
	}
	for range 10 {
		send()
		harness.DrainInbox(old0, take(m0))
		harness.DrainInbox(old1, take(m1))
	}
	quiet(old0, take(m0), 300*time.Millisecond)
	quiet(old1, take(m1), 300*time.Millisecond)
	for _, c := range []struct {
		c  *harness.Client
		nd *harness.Node
		id string
	}{{old0, n1, m0}, {old1, n2, m1}} {
		if err := c.c.Disconnect(&paho.Disconnect{}); err != nil {
			t.Fatalf("disconnect %s: %v", c.id, err)
		}
		// What came after quiet, up to the DISCONNECT, is in the inbox
		// (paho acknowledges a message once its handler put it there):
		// delivered and acknowledged, the cluster owes it to nobody
		// again. Left unread, it counted as lost (qos12 at load 34:
		// 000004 acknowledged by sv-m0 on n1 1 s after the others,
		// 0.3 s before its DISCONNECT; bench/jepsen/RESULTS.md paho26).
		harness.DrainInbox(c.c, take(c.id))
		tc.WaitLog(c.nd, "client_id="+c.id+` reason="client disconnected normally"`, 1, 10*time.Second)
	}
	// m0 first: n1's answer waits, and meanwhile m1's move into n1
	// is answered at once by n2.
	back0 := harness.ResumeInBackground(t, n2, m0, 600)
	send()
	back1 := harness.ResumeInBackground(t, n1, m1, 600)
	var c0, c1 *harness.Client
	for start := time.Now(); c0 == nil || c1 == nil; {
		if time.Since(start) > 90*time.Second {
			t.Fatalf("not both resumed within 90 s; n1:\n%s\nn2:\n%s", harness.GrepLog(n1, "client_id="+prefix), harness.GrepLog(n2, "client_id="+prefix))
		}
		select {
		case c0 = <-back0:
			if c0 == nil {
				t.Fatalf("%s not resumed with its session on n2 within 60 s; n2:\n%s", m0, harness.GrepLog(n2, "client_id="+m0))
			}
			back0 = nil
		case c1 = <-back1:
			if c1 == nil {
				t.Fatalf("%s not resumed with its session on n1 within 60 s; n1:\n%s", m1, harness.GrepLog(n1, "client_id="+m1))
			}
			back1 = nil
		default:
			send()
			harness.DrainInbox(c0, take(m0))
			harness.DrainInbox(c1, take(m1))
		}
	}
	for range 10 {
		send()
		harness.DrainInbox(c0, take(m0))
		harness.DrainInbox(c1, take(m1))
	}
	// Every one of them reaches a member: bounded, and what came is
	// checked for order either way.
	reached := func() int { return len(firsts(slices.Concat(got[m0], got[m1]))) }
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end) && reached() < sent; {
		quiet(c0, take(m0), 250*time.Millisecond)
		quiet(c1, take(m1), 250*time.Millisecond)
	}
	moved0 := harness.GrepLog(n2, `msg="session moved here" node=n2 client_id=`+m0+` from=n1`)
	moved1 := harness.GrepLog(n1, `msg="session moved here" node=n1 client_id=`+m1+` from=n2`)
	t.Logf("%d published, %d reached a member (%s %d, %s %d first deliveries); n3 left a node out %d times; moves: %s %s",
		sent, reached(), m0, len(firsts(got[m0])), m1, len(firsts(got[m1])), harness.CountLog(n3, "share group left to a node"), moved0, moved1)
	failed := false
	for _, id := range []string{m0, m1} {
		// Order per QoS, as MQTT keeps it [MQTT-4.6.0-6] and the
		// checker checks it (per publisher connection, topic and QoS):
		// a QoS 1 message after a newer QoS 2 one of the same publisher
		// is no violation (qos12: 000012 after 000013, and session
		// 25's 000014 after 000015; bench/jepsen/RESULTS.md paho26).
		last := map[byte]int{1: -1, 2: -1}
		var late []string
		for _, s := range firsts(got[id]) {
			i, err := strconv.Atoi(s)
			if err != nil {
				t.Fatalf("%s got %q: not one of the test's messages", id, s)
			}
			if q := qos(i); i < last[q] {
				late = append(late, fmt.Sprintf("%06d after %06d (QoS %d)", i, last[q], q))
				continue
			}
			last[qos(i)] = i
		}
		if len(late) > 0 {
			failed = true
			t.Errorf("%s got %d of %d messages after newer ones of their publisher: %v\nits first deliveries in arrival order: %v",
				id, len(late), len(firsts(got[id])), late[:min(len(late), 20)], firsts(got[id]))
		}
	}
	if n := reached(); n < sent {
		var missing []string
		for i := range sent {
			s := fmt.Sprintf("%06d", i)
			if !slices.Contains(got[m0], s) && !slices.Contains(got[m1], s) {
				missing = append(missing, s)
			}
		}
		t.Errorf("the members got %d of %d messages within 30 s, not %v; first deliveries in arrival order: %s %v, %s %v",
			n, sent, missing, m0, firsts(got[m0]), m1, firsts(got[m1]))
	}
	if failed {
		return
	}
	if moved0 == "" || moved1 == "" || harness.CountLog(n1, "test fault: the move's finish waits") == 0 ||
		harness.CountLog(n1, "test fault: the connection of a session disowned here is taken over late") == 0 {
		// Under load a claim may take the session another way (from
		// the stream, its answer too late): the order was checked, the
		// path not.
		t.Skipf("the members did not both move live with the faults: the test missed its path; n1:\n%s\nn2:\n%s",
			harness.GrepLog(n1, "client_id="+prefix), harness.GrepLog(n2, "client_id="+prefix))
	}
}

// publishAsync sends p on pub (connected to nd) without waiting for its
// acknowledgement, as the order tests' publishers do. A node that cannot
// confirm a forward in time (a partition stream without quorum at load)
// closes the publisher's connection, the outcome of what was in flight
// unknown: the cluster's promise, and a case these tests, which do not
// track acknowledgements, cannot check. They are skipped then, not
// failed (TestReproGroupSwapOrder at load 25; bench/jepsen/RESULTS.md
// paho26). Any other error fails t.
func publishAsync(t *testing.T, pub *harness.Client, nd *harness.Node, p *paho.Publish) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := pub.PublishWithOptions(ctx, p, paho.PublishOptions{Method: paho.PublishMethod_AsyncSend})
	if err == nil {
		return
	}
	select {
	case <-pub.Done():
		t.Skipf("publish %q: %v: %s closed the publisher's connection (a forward not confirmed in time, outcome unknown); %s:\n%s",
			p.Payload, err, nd.Name, nd.Name, harness.GrepLog(nd, "client_id="+pub.ID+" reason=", "not confirmed in time"))
	case <-time.After(5 * time.Second):
	}
	t.Fatalf("publish %q: %v", p.Payload, err)
}
