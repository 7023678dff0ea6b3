package repro_test

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session/state"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"github.com/roost-mqtt/roost/internal/clustertest"
)

// TestReproUnsettledOpsLate: a restarted node whose restored session is
// claimed elsewhere before it settled sends the claimer to the stream
// and to its held subject (takeUnsettled). The copy here had applied a
// batch of what was held for this node, whose ops were still waiting
// for the partition stream (a leader election after the kill); they
// landed there after messages held for this node meanwhile, which the
// copy never got. The claimer, told "nothing applied here", read the
// held subject from the time of the session's last op in the stream,
// the late ops' time, and passed those messages over
// (TestClusterRestartedNodeSessionResumedElsewhere, in CI: 12 of 413
// acknowledged messages lost, here 338 of 792). The fault ops-late holds
// n1's ops for the session's partition from its restart until it gives
// the session up, and lands them before its answer.
func TestReproUnsettledOpsLate(t *testing.T) {
	t.Parallel() // see harness.Main
	const id = "ol-sub"
	tc, pp := restartWithFault(t, "ol", "ops-late="+id+"@n1", "the partition stream takes no ops of this node")
	// Held for n1 from now on, not applied there (its follower waits
	// for the batch's ops) until the session is claimed on n3.
	c := pp.resume(tc.Nodes[2], id)
	if harness.CountLog(tc.Nodes[0], "restored session claimed elsewhere before it was settled here; dropped") == 0 {
		t.Fatalf("n1 did not give up its unsettled copy of %s: the test missed its path; n1:\n%s", id, harness.GrepLog(tc.Nodes[0], "client_id="+id, "cluster:"))
	}
	pp.check(c, tc.Nodes[0], tc.Nodes[2])
}

// TestReproSettleCatchUpFenced: a restarted node settles its restored
// session, and catches up with what publishers held for it until they
// saw the session's keys (onSettled); a claim from another node fenced
// the copy here before that catch-up read, which then gave the copy
// (disowned: keep.go) nothing, and the copy moved live to the claimer
// without those messages (TestClusterRestartedNodeSessionResumedElsewhere:
// 10 of 376 lost). The fault settle-wait announces n1's keys 1 s after
// its settle: publishers hold for n1 meanwhile, and the claim comes then.
func TestReproSettleCatchUpFenced(t *testing.T) {
	t.Parallel() // see harness.Main
	const id = "sf-sub"
	tc, pp := restartWithFault(t, "sf", "settle-wait=1s@n1", "the settled sessions' keys are announced late")
	c := pp.resume(tc.Nodes[2], id)
	if harness.CountLog(tc.Nodes[2], `msg="session moved here" node=n3 client_id=`+id+` from=n1`) == 0 {
		t.Fatalf("n3 did not take %s from n1 live: the test missed its path; n3:\n%s", id, harness.GrepLog(tc.Nodes[2], "client_id="+id))
	}
	pp.check(c, tc.Nodes[0], tc.Nodes[2])
}

// restartWithFault starts three nodes, PREFIX-sub's persistent session
// on n1 (subscribed to PREFIX/q1 at QoS 1, PREFIX/q2 at QoS 2), kills n1
// while PREFIX-pub on n2 publishes to both, and restarts n1 with fault,
// publishing on until n1 logs mark.
func restartWithFault(t *testing.T, prefix, fault, mark string) (*harness.Cluster, *pacedPub) {
	t.Helper()
	// No adoption while n1 is dead: the session moves by the client's
	// claim only. The subscriber reads nothing until it resumes: its
	// queue must take everything published meanwhile.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Config: "cluster:\n  adopt_after: 60s\nlimits:\n  max_queued: 100000\n"})
	n1 := tc.Nodes[0]
	_, pub := harness.PersistentPair(t, n1, tc.Nodes[1], prefix, 600)
	pp := &pacedPub{t: t, nd: tc.Nodes[1], id: prefix + "-pub", prefix: prefix, pub: pub}
	pp.restartDuring(tc, n1, fault, mark)
	return tc, pp
}

// restartDuring kills nd, publishing until 20 messages were acknowledged
// while it is dead (held for it), and restarts it with fault, publishing
// on until nd logs mark.
func (pp *pacedPub) restartDuring(tc *harness.Cluster, nd *harness.Node, fault, mark string) {
	t := pp.t
	t.Helper()
	tc.Kill(nd, syscall.SIGKILL)
	for start := time.Now(); len(pp.want) < 20; {
		if time.Since(start) > 60*time.Second {
			t.Fatalf("only %d messages acknowledged in 60 s with %s dead", len(pp.want), nd.Name)
		}
		pp.publish()
	}
	nd.Env = append(nd.Env, "ROOST_TEST_FAULT="+fault)
	tc.Start(nd)
	for start := time.Now(); harness.CountLog(nd, mark) == 0; {
		if time.Since(start) > 60*time.Second {
			t.Fatalf("%s did not log %q within 60 s; %s:\n%s", nd.Name, mark, nd.Name, harness.GrepLog(nd, "cluster:", "restored"))
		}
		pp.publish()
	}
}

// claimUntilWaits claims id on nd (a CONNECT there, the client gone at
// once) and publishes until nd's move of the session logs the test
// fault's wait before its finish: `"cluster: test fault: the move's
// finish waits ` + waits + `"` (finish-asked, finish-gone ...).
func (pp *pacedPub) claimUntilWaits(tc *harness.Cluster, nd *harness.Node, id, waits string) {
	t := pp.t
	t.Helper()
	claimOn(t, tc, nd, id, harness.QueuedExpiry)
	line := `"cluster: test fault: the move's finish waits ` + waits + `" node=` + nd.Name + ` client_id=` + id
	for start := time.Now(); harness.CountLog(nd, line) == 0; {
		if time.Since(start) > 60*time.Second {
			t.Fatalf("%s's move of %s did not reach its finish within 60 s; %s:\n%s", nd.Name, id, nd.Name, harness.GrepLog(nd, "client_id="+id))
		}
		pp.publish()
	}
}

// pacedPub publishes QoS 1 and 2 messages q1-0, q2-0, q1-1, ... on
// PREFIX/q1 and PREFIX/q2, as the checker's paced publishers do, and
// notes which were acknowledged (want).
type pacedPub struct {
	t       *testing.T
	nd      *harness.Node
	id      string
	prefix  string
	pub     *harness.Client
	want    []string
	unknown int
	// maybe: the messages whose outcome is unknown (the connection
	// closed before their acknowledgement). They may arrive, late too:
	// the checker holds order per publisher connection, and theirs
	// ended.
	maybe []string
	i     int
	// pace: the pause after each round; 0 for 20 ms.
	pace time.Duration
	// ordered: check also fails on a message that came after a newer
	// one of its topic (first arrivals).
	ordered bool
	// st: the subscriber's session state, if it has one (its client
	// dialled with it): check resumes the session on it when the node
	// closes the connection before every message came.
	st *state.State
	// states: the session state of the last client resume dialled for
	// each client id without st (resumeSession), for check likewise.
	states map[string]*state.State
	// ackedAt: for each message acknowledged, the node that acknowledged
	// it, when, and its reason code (0x10: the node routed it to no
	// session and held it for none), which check shows for the lost
	// ones: a loss seen once in many runs is traced from the node logs
	// at that time (TestReproOpOrderRollup's 22 of 506 lost in the
	// middle, session 32, left no way to tell which phase they were
	// published in). unmatched counts the 0x10s.
	ackedAt   map[string]string
	unmatched int
}

func (p *pacedPub) publish() {
	t := p.t
	t.Helper()
	for _, qos := range []byte{1, 2} {
		m := fmt.Sprintf("q%d-%d", qos, p.i)
		rc, closed := p.pub.TryPublish(t, &paho.Publish{Topic: fmt.Sprintf("%s/q%d", p.prefix, qos), QoS: qos, Payload: []byte(m)})
		switch {
		case closed:
			p.unknown++ // outcome unknown: not owed, may arrive
			p.maybe = append(p.maybe, m)
			harness.Eventually(t, 30*time.Second, func() error { return harness.Redial(t, p.nd, p.id, &p.pub) })
		case rc >= 0x80:
			t.Fatalf("publish %s refused: 0x%02X", m, rc)
		default:
			p.want = append(p.want, m)
			if p.ackedAt == nil {
				p.ackedAt = map[string]string{}
			}
			if rc == 0x10 {
				p.unmatched++
			}
			p.ackedAt[m] = fmt.Sprintf("%s %s 0x%02X", p.nd.Name, time.Now().UTC().Format("15:04:05.000"), rc)
		}
	}
	p.i++
	time.Sleep(cmp.Or(p.pace, 20*time.Millisecond))
}

// resume resumes id's session on nd in the background, publishing on
// until a second after it came back, and returns its client.
func (p *pacedPub) resume(nd *harness.Node, id string) *harness.Client {
	p.t.Helper()
	return p.resumeSession(nd, id, nil)
}

// resumeSession is resume with the client's session state in st, the
// state of the session's previous client, which must be done
// (clustertest.DialSession).
func (p *pacedPub) resumeSession(nd *harness.Node, id string, st *state.State) *harness.Client {
	t := p.t
	t.Helper()
	if st == nil {
		// A state of the client's own (a new one each resume: the
		// previous client may still be connected), which check
		// resumes the session on if the node closes the connection:
		// without one, check counted the undelivered rest lost
		// (load31's shape, in every test that gave no state).
		st = state.NewInMemory()
		if p.states == nil {
			p.states = map[string]*state.State{}
		}
		p.states[id] = st
	}
	back := harness.ResumeSessionInBackground(t, nd, id, 600, st)
	var stop time.Time
	for start := time.Now(); stop.IsZero() || time.Now().Before(stop); {
		if time.Since(start) > 90*time.Second {
			t.Fatalf("%s not resumed within 90 s; %s:\n%s", id, nd.Name, harness.GrepLog(nd, "client_id="+id))
		}
		if stop.IsZero() && len(back) > 0 {
			stop = time.Now().Add(time.Second)
		}
		p.publish()
	}
	c, ok := <-back
	if !ok {
		t.Fatalf("%s not resumed with its session on %s within 60 s", id, nd.Name)
	}
	return c
}

// check requires every acknowledged message at c, QoS 2 ones once; from
// and to are the session's old and new nodes, whose logs it shows.
func (p *pacedPub) check(c *harness.Client, from, to *harness.Node) {
	t := p.t
	t.Helper()
	t.Logf("%d messages acknowledged (%d of the paced publisher's with 0x10, no matching subscribers), %d with unknown outcome",
		len(p.want), p.unmatched, p.unknown)
	// Waited on while messages come (30 s without one ends it), and
	// until c's connection ends.
	start := time.Now()
	got, order, lost, last := harness.ReceiveAllProgress(c, p.want, 30*time.Second, 2*time.Minute)
	if last > 30*time.Second {
		t.Logf("the last acknowledged message came %.1f s after the wait began (at load)", last.Seconds())
	}
	// A connection the node closed is resumed, as a client does: the
	// rest is in the session. A node closes it when the subscriber's
	// acknowledgements are not replicated within 15 s ("store could not
	// confirm ops in time; closing connection, outcome unknown"): at load
	// 13-16 n2's partition 0 took that long to come back after n3's pause
	// in TestReproKeptSinceUnfinished, and the messages not yet delivered
	// then, a contiguous tail, were counted lost (150 of 416, session 31;
	// the same shape at load 55-60 in sessions 30 and 31, logs gone:
	// bench/jepsen/RESULTS.md "load31").
	st := cmp.Or(p.st, p.states[c.ID])
	for tries := 0; len(lost) > 0 && st != nil && ended(c) && tries < 3; tries++ {
		t.Logf("%s's connection to %s ended %.1f s into the wait, %d acknowledged messages not delivered yet: resumed there",
			c.ID, to.Name, time.Since(start).Seconds(), len(lost))
		n := len(p.want)
		c = p.resumeSession(to, c.ID, st)
		// Those published meanwhile are owed too.
		more, moreOrder, stillLost, _ := harness.ReceiveAllProgress(c, append(lost, p.want[n:]...), 30*time.Second, 2*time.Minute)
		for _, m := range moreOrder {
			if got[m] == 0 {
				order = append(order, m)
			}
		}
		for m, n := range more {
			got[m] += n
		}
		lost = stillLost
	}
	if len(lost) > 0 {
		t.Logf("waited %.1f s; the last acknowledged message that came, %.1f s after the wait began", time.Since(start).Seconds(), last.Seconds())
		t.Fatalf("%d of %d acknowledged messages lost: %v\n%s:\n%s\n%s:\n%s", len(lost), len(p.want), p.whenAcked(lost[:min(len(lost), 20)]),
			from.Name, harness.GrepLog(from, "client_id="+p.prefix, "cluster:", "restored"), to.Name, harness.GrepLog(to, "client_id="+p.prefix, "cluster:"))
	}
	// A second more: nothing but owed or maybe-published messages.
	for late := time.After(time.Second); ; {
		var pk *paho.Publish
		select {
		case pk = <-c.In:
		case <-late:
		}
		if pk == nil {
			break
		}
		s := string(pk.Payload)
		if s == clustertest.Probe {
			continue
		}
		if !slices.Contains(p.want, s) && !slices.Contains(p.maybe, s) {
			t.Fatalf("%s: unexpected message %q on %q", c.ID, s, pk.Topic)
		}
		if got[s] == 0 {
			order = append(order, s)
		}
		got[s]++
	}
	for m, n := range got {
		if m[1] == '2' && n != 1 {
			t.Errorf("QoS 2 message %s delivered %d times", m, n)
		}
	}
	if late := pacedOutOfOrder(order); p.ordered && len(late) > 0 {
		t.Errorf("%d messages after newer ones of their topic: %v\n%s:\n%s", len(late), late[:min(len(late), 20)],
			to.Name, harness.GrepLog(to, "client_id="+p.prefix, "cluster:"))
	}
}

// whenAcked returns ms, each with the node that acknowledged it and when
// (ackedAt), where known.
func (p *pacedPub) whenAcked(ms []string) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m
		if at, ok := p.ackedAt[m]; ok {
			out[i] = m + " (" + at + ")"
		}
	}
	return out
}

// ended reports whether c's connection has ended.
func ended(c *harness.Client) bool {
	select {
	case <-c.Done():
		return true
	default:
		return false
	}
}

// pacedOutOfOrder returns the messages of order (pacedPub's payloads,
// first arrivals) that came after a newer one of their QoS's topic.
func pacedOutOfOrder(order []string) []string {
	var late []string
	last := map[string]int{}
	for _, m := range order {
		q, n, ok := strings.Cut(m, "-")
		i, err := strconv.Atoi(n)
		if !ok || err != nil {
			continue
		}
		if l, seen := last[q]; seen && i < l {
			late = append(late, fmt.Sprintf("%s after %s-%d", m, q, l))
		}
		last[q] = max(last[q], i)
	}
	return late
}
