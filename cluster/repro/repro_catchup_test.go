package repro_test

import (
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
)

// TestReproHeldAfterReadAhead: a session taken from the stream gets what
// was held for it after its read ahead ahead of what publishers forward to
// it once they see its interest [MQTT-4.6.0-5]. In test/jepsen
// TestClusterFull (seeds 41, 42, 44: 14-56 reorderings a run) the
// adopting node read its own held subject first and the others after,
// for seconds under load; what was held in between came through the
// follower (250 ms polls) behind newer forwarded messages
// (bench/jepsen/RESULTS.md, "Reorderings after fencehold"). The adopted
// session now catches up first (heldahead.go catchUp, broker CatchUp).
//
// Here n1, the subscriber's node, is killed while a publisher on n2 sends
// QoS 1 and 2 without pause; the client resumes on n3, whose adoption
// waits adoptWait after its read ahead (adopt-wait): n2 holds for n1
// meanwhile, then forwards to n3. Every acknowledged message must come,
// first deliveries in publication order per topic, a QoS 2 one once.
func TestReproHeldAfterReadAhead(t *testing.T) {
	t.Parallel() // see harness.Main
	const id = "cu-sub"
	// No adoption by the janitor: the session moves by the client's
	// claim only; room for the elections after the kill.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "adopt-wait=" + id + "@n3", Config: "cluster:\n  adopt_after: 60s\n  forward_timeout: 15s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	expiry := uint32(600)
	_, pub := harness.PersistentPair(t, n1, n2, "cu", expiry)
	tc.Kill(n1, syscall.SIGKILL)
	orderAcrossResume(t, n2, &pub, "cu-pub", n3, id, expiry, nil)
	if harness.CountLog(n3, `"cluster: test fault: adoption waits after the read ahead" node=n3 client_id=`+id) == 0 {
		t.Fatalf("the adoption on n3 did not wait (the test's fault); n3:\n%s", harness.GrepLog(n3, "client_id="+id))
	}
}

// orderAcrossResume publishes QoS 1 and 2 messages on PREFIX/q1 and
// PREFIX/q2 (id is PREFIX-sub) through *pub (pubID, on pubNode) without
// pause, calls before (if any) once 20 were acknowledged, then resumes
// id's session on on, and goes on publishing for 3 s after the resume.
// Every acknowledged message must reach the resumed session, first
// deliveries in publication order per topic [MQTT-4.6.0-5], QoS 2 ones
// once.
func orderAcrossResume(t *testing.T, pubNode *harness.Node, pub **harness.Client, pubID string, on *harness.Node, id string, expiry uint32, before func()) {
	t.Helper()
	orderAcrossResumeWhen(t, pubNode, pub, pubID, on, id, expiry, before, nil)
}

// orderAcrossResumeWhen is orderAcrossResume that resumes the session
// only once ready (if not nil) says so, publishing meanwhile: a CONNECT
// that waits on the node for long (a restored session's settle) outlasts
// the client's CONNACK bound, and the abandoned one, taken after the next
// try's, takes the session over from it.
func orderAcrossResumeWhen(t *testing.T, pubNode *harness.Node, pub **harness.Client, pubID string, on *harness.Node, id string, expiry uint32, before func(), ready func() bool) {
	t.Helper()
	prefix := strings.TrimSuffix(id, "-sub")
	var (
		c       *harness.Client
		order   []string // first arrivals of acknowledged messages
		seen    = map[string]int{}
		acked   = map[string]bool{}
		unknown int
		back    <-chan *harness.Client
		begun   bool      // before was called
		stop    time.Time // 3 s after the resume: forwards while it catches up
		start   = time.Now()
		// st: the subscriber's session state across its connections, so
		// that a QoS 2 message it took before one ended and the node
		// sends again (DUP) is not delivered twice [MQTT-4.3.3-10].
		st = state.NewInMemory()
	)
	take := func(m *paho.Publish) {
		p := string(m.Payload)
		if seen[p]++; seen[p] == 1 && acked[p] {
			order = append(order, p)
		}
	}
	for i := 0; stop.IsZero() || time.Now().Before(stop); i++ {
		if time.Since(start) > 120*time.Second {
			t.Fatalf("the session was not resumed on %s within 120 s; %s:\n%s", on.Name, on.Name, harness.GrepLog(on, "client_id="+id))
		}
		if !begun && len(acked) >= 20 {
			if before != nil {
				before()
			}
			begun = true
		}
		if begun && back == nil && (ready == nil || ready()) {
			back = harness.ResumeSessionInBackground(t, on, id, expiry, st)
		}
		if back != nil && c == nil && len(back) > 0 {
			if c = <-back; c == nil {
				t.Fatalf("%s not resumed with its session on %s within 60 s", id, on.Name)
			}
			stop = time.Now().Add(3 * time.Second)
		}
		harness.DrainInbox(c, take)
		for _, qos := range []byte{1, 2} {
			if len(acked)+unknown >= 800 {
				break // the session's queue limit is 1,000: none dropped
			}
			p := fmt.Sprintf("q%d-%06d", qos, i)
			rc, closed := (*pub).TryPublish(t, &paho.Publish{Topic: fmt.Sprintf("%s/q%d", prefix, qos), QoS: qos, Payload: []byte(p)})
			switch {
			case closed:
				unknown++ // outcome unknown: not owed, may arrive
				harness.Eventually(t, 30*time.Second, func() error { return harness.Redial(t, pubNode, pubID, pub) })
			case rc >= 0x80:
				t.Fatalf("publish %s refused: 0x%02X", p, rc)
			default:
				acked[p] = true
			}
		}
		time.Sleep(20 * time.Millisecond) // a paced publisher, as the checker's
	}
	// Waited on while messages come (30 s without a new one ends it, 2
	// minutes at most), and until c's connection ends: a node closes it
	// when the session's acknowledgements are not replicated within 15 s
	// ("store could not confirm ops in time; closing connection, outcome
	// unknown"), and the client resumes, as a client does: the rest is in
	// the session. A fixed 30 s that read on a closed connection counted
	// the undelivered tail lost (TestReproKeptBeforeLateOps, 123 of 146,
	// load 90, session 32: n1 closed kl-sub's connection 16 s into the
	// wait, its partition streams without a quorum).
	start = time.Now()
	for tries := 0; ; tries++ {
		var want []string
		for p := range acked {
			if seen[p] == 0 {
				want = append(want, p)
			}
		}
		got, gotOrder, lost, _ := harness.ReceiveAllProgress(c, want, 30*time.Second, 2*time.Minute)
		for _, p := range gotOrder {
			for range got[p] {
				take(&paho.Publish{Payload: []byte(p)})
			}
		}
		if len(lost) == 0 {
			break
		}
		if !ended(c) || tries == 3 {
			slices.Sort(lost)
			t.Fatalf("%d of %d acknowledged messages lost (waited %.1f s): %v\n%s:\n%s", len(lost), len(acked), time.Since(start).Seconds(),
				lost[:min(len(lost), 20)], on.Name, harness.GrepLog(on, "client_id="+id))
		}
		t.Logf("%s's connection to %s ended %.1f s into the wait, %d acknowledged messages not delivered yet: resumed there",
			id, on.Name, time.Since(start).Seconds(), len(lost))
		if c = <-harness.ResumeSessionInBackground(t, on, id, expiry, st); c == nil {
			t.Fatalf("%s not resumed with its session on %s within 60 s", id, on.Name)
		}
	}
	t.Logf("%d messages acknowledged, %d with unknown outcome", len(acked), unknown)
	var out, twice []string
	for _, topic := range []string{"q1-", "q2-"} {
		last := -1
		for _, p := range order {
			s, ok := strings.CutPrefix(p, topic)
			if !ok {
				continue
			}
			i, _ := strconv.Atoi(s)
			if i < last {
				out = append(out, fmt.Sprintf("%s after %s%06d", p, topic, last))
			}
			last = max(last, i)
		}
	}
	for p, n := range seen {
		if n > 1 && strings.HasPrefix(p, "q2-") {
			twice = append(twice, p)
		}
	}
	if len(out) > 0 {
		t.Errorf("%d messages came after newer ones of their topic: %v\n%s:\n%s", len(out), out[:min(len(out), 20)],
			on.Name, harness.GrepLog(on, "client_id="+id, "held"))
	}
	if len(twice) > 0 {
		t.Errorf("%d QoS 2 messages came twice: %v", len(twice), twice[:min(len(twice), 20)])
	}
}

// TestReproRestoredSettleOrder: a restarted node's restored session, once
// settled, gets what the others held for the node after the read that
// settled it ahead of what they forward to it once they see its keys
// [MQTT-4.6.0-5] (catchup.go). In TestClusterFull (seed 44, ps3 on a
// restarted n3: 5 messages; seed 41, ps0 and ps2 on n1, ps3 on n3) these
// were the reorderings left once adopted sessions caught up: held for the
// node until the settle, applied by its own follower after newer ones it
// got forwarded at once.
//
// Here n1, the subscriber's node, is killed while a publisher on n2 sends
// QoS 1 and 2 without pause, started again once 20 were acknowledged, and
// the client resumes its session there; n1 announces the settled
// session's keys 3 s late (settle-wait), n2 holding for n1 meanwhile.
func TestReproRestoredSettleOrder(t *testing.T) {
	t.Parallel() // see harness.Main
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "settle-wait=3s@n1", Config: "cluster:\n  adopt_after: 60s\n  forward_timeout: 15s\n"})
	n1, n2 := tc.Nodes[0], tc.Nodes[1]
	expiry := uint32(600)
	const id = "rs-sub"
	_, pub := harness.PersistentPair(t, n1, n2, "rs", expiry)
	tc.Kill(n1, syscall.SIGKILL)
	orderAcrossResume(t, n2, &pub, "rs-pub", n1, id, expiry, func() { tc.Start(n1) })
	if harness.CountLog(n1, "cluster: test fault: the settled sessions' keys are announced late") == 0 {
		t.Fatalf("n1 did not announce its settled sessions late (the test's fault); n1:\n%s", harness.GrepLog(n1, "client_id="+id))
	}
}
