package repro_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestReproReforwardPlain: a share-group message that a member's old node
// passes on to the member's new node (handover_live.go, reforward) is for
// the group only (issue #17; TestClusterFull seed 41: persistent
// subscribers ps0 and ps2 on n1 each got pub1#52, QoS 2 from a clean
// publisher, twice on one connection, 80 ms after group member g1m1 moved
// live from n3 to n1). rf-gm's persistent session on n3 is group rg's
// only member; rf-ps, a plain persistent QoS 2 subscriber to the same
// topic, stays connected on n1; a clean publisher on n2 sends QoS 2
// messages while rf-gm's client resumes on n1 (a live move) and for 4 s
// after. n2 handles n3's interest interestLate late (interest-late), as
// over a slow route: for that long after n3 exported the session it goes
// on choosing n3 for about every other group message, which n3, with no
// member left, passes on to n1.
//
// Before, n1 delivered such a message as any forward: to rg's member and
// to every plain subscription matching it, rf-ps included, which had it
// already from n2's own forward; the publisher is clean, so no Origin
// told the two copies apart. Each acknowledged message must reach rf-ps
// once and group rg once.
func TestReproReforwardPlain(t *testing.T) {
	t.Parallel() // see harness.Main
	const topic, group = "rf/t", "$share/rg/rf/t"
	tc := harness.StartClusterFault(t, 3, "interest-late=n3@n2")
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	ps := harness.OriginSub(t, n1, "rf-ps", topic)
	gm := harness.OriginSub(t, n3, "rf-gm", group)
	harness.AwaitOriginProbes(t, n2, topic, ps, gm) // n2 routes to both
	gm.Disconnect(&paho.Disconnect{})
	tc.WaitLog(n3, `client_id=rf-gm reason="client disconnected normally"`, 1, 20*time.Second)

	pub := harness.Connect(t, n2, "rf-pub")
	acked, results := make(chan string, 4096), make(chan pubResult, 1)
	stop := make(chan struct{})
	go func() { results <- paceQoS2(pub, topic, stop, acked) }()
	for range 10 { // the session is queuing on n3 when the move begins
		select {
		case <-acked:
		case <-time.After(harness.PublishBound):
			t.Fatal("the publisher got no PUBCOMP")
		}
	}
	back := harness.Resume(t, n1, "rf-gm", harness.OriginExpiry, 60*time.Second)
	tc.WaitLog(n1, `"session moved here" node=n1 client_id=rf-gm from=n3`, 1, 60*time.Second)
	time.Sleep(4 * time.Second) // past interestLate: n2 stops choosing n3
	close(stop)
	res := <-results
	if res.err != nil {
		t.Fatalf("publisher: %v (after %d acknowledged)", res.err, len(res.acked))
	}
	passed := harness.CountLog(n3, "share-group message for a moved session goes on to its new owner")
	t.Logf("%d acknowledged, %d of unknown outcome; n3 passed %d group messages on to n1", len(res.acked), res.unknown, passed)

	for _, c := range []struct {
		name string
		c    *harness.Client
	}{{"rf-ps (plain)", ps}, {"group rg (rf-gm)", back}} {
		got := receiveQuiet(c.c, res.acked, 60*time.Second, 3*time.Second)
		var lost, twice []string
		for _, p := range res.acked {
			switch got[p] {
			case 0:
				lost = append(lost, p)
			case 1:
			default:
				twice = append(twice, fmt.Sprintf("%s×%d", p, got[p]))
			}
		}
		for p, k := range got {
			if k > 1 && !res.ackedSet()[p] {
				twice = append(twice, fmt.Sprintf("%s×%d (outcome unknown)", p, k))
			}
		}
		if len(lost) > 0 || len(twice) > 0 {
			t.Errorf("%s: lost %d %v, more than once %d %v", c.name, len(lost), lost[:min(len(lost), 10)], len(twice), twice[:min(len(twice), 10)])
		}
	}
	// After the message checks, which hold on any path: interest-late's
	// window is 1.5 s, and at load the QoS 2 publisher may complete no
	// message n2 gives n3 in it (29 acknowledged in the whole test, none
	// passed on, load 100, session 32). A failure above stays one.
	if passed == 0 {
		t.Skip("n3 passed no group message on to n1: the test did not take its path")
	}
}

// pubResult is what paceQoS2 published.
type pubResult struct {
	acked   []string
	unknown int
	err     error
}

func (r pubResult) ackedSet() map[string]bool {
	m := make(map[string]bool, len(r.acked))
	for _, p := range r.acked {
		m[p] = true
	}
	return m
}

// paceQoS2 publishes QoS 2 messages m-00000, m-00001, ... on topic one at a
// time until stop (5000 at most), sending each acknowledged payload to
// acked as well (dropped when full). A closed connection ends it with an
// error; a refused publish is of unknown outcome. It must not fail the
// test itself: it runs on its own goroutine.
func paceQoS2(c *harness.Client, topic string, stop <-chan struct{}, acked chan<- string) pubResult {
	var r pubResult
	for i := 0; i < 5000; i++ {
		select {
		case <-stop:
			return r
		default:
		}
		p := fmt.Sprintf("m-%05d", i)
		ctx, cancel := context.WithTimeout(context.Background(), harness.PublishBound)
		resp, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 2, Payload: []byte(p)})
		cancel()
		switch {
		case err != nil:
			r.err = fmt.Errorf("publish %s: %w", p, err)
			return r
		case resp.ReasonCode >= 0x80:
			r.unknown++
			continue
		}
		r.acked = append(r.acked, p)
		select {
		case acked <- p:
		default:
		}
	}
	return r
}

// receiveQuiet reads c's messages (probes skipped) until each of want came
// or d passed, then for quiet more (a second copy comes within
// milliseconds of the first), and returns how often each payload came.
func receiveQuiet(c *harness.Client, want []string, d, quiet time.Duration) map[string]int {
	got, _ := harness.ReceiveAll(c, want, d)
	for end := time.After(quiet); ; {
		select {
		case p := <-c.In:
			if s := string(p.Payload); s != "probe" {
				got[s]++
			}
		case <-end:
			return got
		}
	}
}
