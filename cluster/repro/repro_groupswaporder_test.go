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
			t.Parallel()
			testGroupSwapOrder(t, tt.prefix, tt.qos2)
		})
	}
}

func testGroupSwapOrder(t *testing.T, prefix string, qos2 bool) {
	m0, m1 := prefix+"-m0", prefix+"-m1"
	tc := harness.StartClusterFault(t, 3, "steps-late="+m0+"@n1,finish-slow="+m1+"@n1")
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
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := pub.PublishWithOptions(ctx, &paho.Publish{Topic: prefix + "/t", QoS: qos(sent), Payload: []byte(fmt.Sprintf("%06d", sent))},
			paho.PublishOptions{Method: paho.PublishMethod_AsyncSend})
		if err != nil {
			t.Fatalf("publish %d: %v", sent, err)
		}
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
		last := -1
		var late []string
		for _, s := range firsts(got[id]) {
			i, err := strconv.Atoi(s)
			if err != nil {
				t.Fatalf("%s got %q: not one of the test's messages", id, s)
			}
			if i < last {
				late = append(late, fmt.Sprintf("%06d after %06d", i, last))
				continue
			}
			last = i
		}
		if len(late) > 0 {
			failed = true
			t.Errorf("%s got %d of %d messages after newer ones of their publisher: %v", id, len(late), len(firsts(got[id])), late[:min(len(late), 20)])
		}
	}
	if n := reached(); n < sent {
		t.Errorf("the members got %d of %d messages within 30 s", n, sent)
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
