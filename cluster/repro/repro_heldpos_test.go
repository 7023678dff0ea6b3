package repro_test

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestReproHeldPos: a session handed over live while the held reads of
// the node that has it are not done (a release request's wait for them,
// awaitHeld, cut at its bound) loses none of what was held for it. It
// lost them: the old node's followers applied them after the move's
// finish, to no session, and the new owner, answered with the session,
// read no held subject (test/jepsen TestClusterFull seed 42: ps3, 10
// lost, "session handed over before its held messages were applied"
// twice). Now the answer names, per held subject the old node followed
// for the session, where its follower was, and the new owner reads on
// from there once the move adopted the session (owners.answer,
// heldPositions; sessions.readHanded).
//
// n1, the subscriber's node, is killed while a publisher on n2 sends QoS
// 1 and 2. The client resumes on n3, whose adoption waits adoptWait after
// its read ahead (adopt-wait): n2 holds for n1 meanwhile, and n3's
// followers do not read while they follow the session (held-stall), so
// what was held then is not applied there. The client leaves n3 and
// resumes on n2, whose claim n3 answers with the session, its held wait
// cut. Every acknowledged message must reach the client, a QoS 2 one once.
func TestReproHeldPos(t *testing.T) {
	t.Parallel() // see harness.Main
	const id = "hp-sub"
	// No adoption by the janitor: the session moves by the client's
	// claims only; room for the elections after the kill.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "adopt-wait=" + id + "@n3,held-stall=" + id + "@n3", Config: "cluster:\n  adopt_after: 60s\n  forward_timeout: 15s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	expiry := uint32(600)
	_, pub := harness.PersistentPair(t, n1, n2, "hp", expiry)
	tc.Kill(n1, syscall.SIGKILL)

	var (
		seen    = map[string]int{}
		acked   = map[string]time.Time{}
		unknown int
		c       *harness.Client // the client where it is now
		back    <-chan *harness.Client
		on      = n3
		stop    time.Time // 3 s after the resume on n2
		start   = time.Now()
	)
	take := func(m *paho.Publish) {
		// A DUP copy after one came is the redelivery of an exchange
		// the taken-over connection did not complete.
		if p := string(m.Payload); seen[p] == 0 || !m.Duplicate() {
			seen[p]++
		}
	}
	for i := 0; stop.IsZero() || time.Now().Before(stop); i++ {
		if time.Since(start) > 180*time.Second {
			t.Fatalf("the session was not resumed on %s within 180 s; n3:\n%s\nn2:\n%s", on.Name,
				harness.GrepLog(n3, "client_id="+id), harness.GrepLog(n2, "client_id="+id))
		}
		switch {
		case back == nil && c == nil && on == n3 && len(acked) >= 20:
			back = harness.ResumeInBackground(t, n3, id, expiry)
		case back != nil && len(back) > 0:
			if c = <-back; c == nil {
				t.Fatalf("%s not resumed with its session on %s within 60 s\n%s:\n%s", id, on.Name, on.Name, harness.GrepLog(on, "client_id="+id))
			}
			if on == n3 {
				// Its followers there stalled, the client leaves n3 for
				// n2 (its session stays, offline, until claimed).
				tc.WaitLog(n3, `"cluster: test fault: a held follower does not read"`, 1, 30*time.Second)
				harness.DrainInbox(c, take)
				c.Disconnect(&paho.Disconnect{})
				tc.WaitLog(n3, "client_id="+id+` reason="client disconnected normally"`, 1, harness.Wait)
				harness.DrainInbox(c, take)
				c, on = nil, n2
				back = harness.ResumeInBackground(t, n2, id, expiry)
			} else {
				back, stop = nil, time.Now().Add(3*time.Second)
			}
		}
		harness.DrainInbox(c, take)
		for _, qos := range []byte{1, 2} {
			if len(acked)+unknown >= 800 {
				break // the session's queue limit is 1,000: none dropped
			}
			p := fmt.Sprintf("q%d-%06d", qos, i)
			rc, closed := pub.TryPublish(t, &paho.Publish{Topic: fmt.Sprintf("hp/q%d", qos), QoS: qos, Payload: []byte(p)})
			switch {
			case closed:
				unknown++ // outcome unknown: not owed, may arrive
				harness.Eventually(t, 30*time.Second, func() error { return harness.Redial(t, n2, "hp-pub", &pub) })
			case rc >= 0x80:
				t.Fatalf("publish %s refused: 0x%02X", p, rc)
			default:
				acked[p] = time.Now()
			}
		}
		// Slower until the session is on n3 (its claim waits for the
		// elections after the kill), so that the queue limit leaves
		// room for what is published while n3's adoption waits.
		pace := 20 * time.Millisecond
		if on == n3 {
			pace = 150 * time.Millisecond
		}
		time.Sleep(pace)
	}
	missing := func() (out []string) {
		for p := range acked {
			if seen[p] == 0 {
				out = append(out, p)
			}
		}
		return out
	}
	for deadline := time.Now().Add(30 * time.Second); len(missing()) > 0 && time.Now().Before(deadline); {
		select {
		case m := <-c.In:
			take(m)
		case <-time.After(100 * time.Millisecond):
		}
	}
	// Late copies would be duplicates: a second for them.
	for end := time.After(time.Second); ; {
		select {
		case m := <-c.In:
			take(m)
			continue
		case <-end:
		}
		break
	}

	if lost := missing(); len(lost) > 0 {
		t.Errorf("%d of %d acknowledged messages lost: %v\nn3:\n%s\nn2:\n%s", len(lost), len(acked), lost[:min(len(lost), 20)],
			harness.GrepLog(n3, "client_id="+id), harness.GrepLog(n2, "client_id="+id))
	}
	var twice []string
	for p, k := range seen {
		if k > 1 && strings.HasPrefix(p, "q2-") {
			twice = append(twice, p)
		}
	}
	if len(twice) > 0 {
		t.Errorf("%d QoS 2 messages came twice: %v", len(twice), twice[:min(len(twice), 20)])
	}
	t.Logf("%d messages acknowledged, %d with unknown outcome", len(acked), unknown)
	for _, nd := range []*harness.Node{n3, n2} {
		t.Logf("%s:\n%s", nd.Name, harness.GrepLog(nd, "client id claimed", "moved here", "read ahead for", "handed over", "taken over by another", "held subjects named"))
	}

	// The path: messages acknowledged while n3's adoption waited (held
	// for n1 only, never applied on n3), n3's held wait cut, and the
	// session moved live to n2. A loaded machine can miss it (seen at
	// load 25: n2's claim took the session from the replicated record,
	// n3's answer too late for it); the run still checked every
	// acknowledged message above, so a miss is logged, not failed: what
	// this test guards is the path, and the suite's quiet runs take it.
	waitFrom := logTime(t, n3, `"cluster: test fault: adoption waits after the read ahead" node=n3 client_id=`+id)
	waitTo := logTime(t, n3, `"cluster: held messages delivered with the session's adoption" node=n3 client_id=`+id)
	inWait := 0
	for _, at := range acked {
		if at.After(waitFrom) && at.Before(waitTo) {
			inWait++
		}
	}
	cut := `"cluster: session handed over before its held messages were applied" node=n3 client_id=` + id
	moved := `"session moved here" node=n2 client_id=` + id + " from=n3"
	if inWait == 0 || harness.CountLog(n3, cut) == 0 || harness.CountLog(n2, moved) == 0 {
		t.Logf("the run missed the test's path: %d messages acknowledged while n3's adoption waited (%v to %v), "+
			"n3's held waits cut: %d, live moves to n2: %d", inWait, waitFrom, waitTo, harness.CountLog(n3, cut), harness.CountLog(n2, moved))
		return
	}
	t.Logf("the path taken: %d messages acknowledged while n3's adoption waited", inWait)
}

// logTime returns the time of nd's first log line containing s; it fails
// the test when there is none.
func logTime(t *testing.T, nd *harness.Node, s string) time.Time {
	t.Helper()
	l := firstLogLine(t, nd, s)
	v, _, _ := strings.Cut(strings.TrimPrefix(l, "time="), " ")
	at, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		t.Fatalf("%s: no log line %q with a time: %v", nd.Name, s, err)
	}
	return at
}
