package repro_test

import (
	"context"
	"fmt"
	"path"
	"regexp"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestReproMoveInKilled: what a node held for a session moving in live,
// killed before the move's adoption, reaches the session. The node
// announces the session's filters and share groups as routing interest
// when the move begins, and publishers elsewhere forward them there; it
// holds those messages for the session and confirms them once it adopted
// it. Killed first, it confirms none: each publisher's forward fails, and
// the publisher holds the message for the dead node by the persistent
// keys it announced (its orphan interest), which a session moving in did
// not have: nothing was held, the publish was acknowledged, and nobody
// had it (test/jepsen TestClusterFull seed 832, 2026-12-07: g1 pub0#154,
// QoS 1, forwarded by n1 at 10:22:38.216 to n3 for g1, whose member g1m1
// moved in there from n2 since 38.105, n2 left out by g1m1's away key;
// n3 killed at 38.514 before the adoption, n1's publish acknowledged at
// 38.752 with no hold for n3; g1m1 resumed on n2 from the stream).
//
// Here mk-m, persistent, offline on n1 (a share group's only member and
// a plain subscriber), is claimed by a CONNECT on n2, whose move waits
// before its finish (finish-asked); n3's publisher sends to the group and
// the plain filter, those forwards wait for n2, and n2 is killed. mk-m
// resumes on n1, its old node, as g1m1 did on n2: every acknowledged
// message must reach it, QoS 2 once.
func TestReproMoveInKilled(t *testing.T) {
	t.Parallel() // see harness_test.go
	const id, prefix = "mk-m", "mk"
	// No adoption by the janitor: the session moves by the claims only.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "finish-asked=" + id + "@n2,finish-asked-for=20s@n2", Config: "cluster:\n  adopt_after: 60s\n  forward_timeout: 15s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	topics := []string{prefix + "/q1", prefix + "/q2", prefix + "/p"}
	m := harness.NewPersistent(t, n1, id, paho.SubscribeOptions{Topic: "$share/mk/" + topics[0], QoS: 1},
		paho.SubscribeOptions{Topic: "$share/mk/" + topics[1], QoS: 2}, paho.SubscribeOptions{Topic: topics[2], QoS: 1})
	pub := harness.Connect(t, n3, prefix+"-pub")
	for _, tp := range topics {
		pub.AwaitInterest(t, tp)
	}
	if err := m.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatalf("disconnect %s from n1: %v", id, err)
	}
	tc.WaitLog(n1, "client_id="+id+` reason="client disconnected normally"`, 1, harness.Wait)

	// The move into n2, its finish held: n2's interest in the session's
	// filters is out, and every node's barrier came (each put once it
	// saw that interest): what n3 publishes now is the session's on n2.
	claimOn(t, tc, n2, id, harness.QueuedExpiry)
	tc.WaitLog(n2, `"cluster: test fault: the move's finish waits for a newer claim" node=n2 client_id=`+id, 1, time.Minute)
	out := publishWaiting(pub, topics, 3)
	time.Sleep(time.Second) // n3 routes them and forwards to n2
	tc.Kill(n2, syscall.SIGKILL)
	acked, unknown := out.wait()

	c := harness.Resume(t, n1, id, harness.QueuedExpiry, time.Minute)
	got, lost := harness.ReceiveAll(c, acked, 30*time.Second)
	t.Logf("%d acknowledged, %d unknown", len(acked), unknown)
	if len(lost) > 0 {
		t.Fatalf("%d of %d acknowledged messages lost: %v\nn3:\n%s\nn1:\n%s", len(lost), len(acked), lost,
			harness.GrepLog(n3, "peer=n2", "node gone"), harness.GrepLog(n1, "client_id="+id))
	}
	// A second more: a publish of unknown outcome may still come (not
	// owed, allowed), a QoS 2 one once. c.None here failed the test on
	// one (load ~140: 0 acknowledged, 9 unknown, "p-2" came after
	// ReceiveAll; bench/jepsen/RESULTS.md, "rf32").
	drainFor(c, time.Second, func(p string) { got[p]++ })
	for p := range got {
		if !out.sent(p) {
			t.Errorf("%s: unexpected message %q", id, p)
		}
	}
	harness.CheckQoS2Once(t, got)
	if len(acked) == 0 {
		t.Skipf("no publish acknowledged (%d unknown): nothing owed to %s, the test missed its path", unknown, id)
	}
	// The plain messages after n3's barrier went to n2 alone; with the
	// group's turns n3 gave n2, n1 read them in n2's held subject.
	if !heldReadFrom.MatchString(harness.GrepLog(n1, "peer=n2")) {
		t.Skipf("n1 read nothing held for n2 for %s: no publish waited for n2's move, the test missed its path", id)
	}
}

// heldReadFrom matches n1's read ahead of n2's held subject for mk-m
// that gave the session something.
var heldReadFrom = regexp.MustCompile(`read ahead for a session taken from the stream" node=n1 client_id=mk-m peer=n2 .* messages=[1-9]`)

// waitingPublishes are publishes sent at once, each waiting for its
// acknowledgement (publishWaiting).
type waitingPublishes struct {
	wg  sync.WaitGroup
	mu  sync.Mutex
	res []publishResult
}

type publishResult struct {
	m   string
	rc  byte
	err error
}

// publishWaiting sends n messages to each of topics through pub at once
// (QoS 2 to a topic named .../q2, else QoS 1), each in its own
// goroutine; the payloads are the topic's last level and the count.
func publishWaiting(pub *harness.Client, topics []string, n int) *waitingPublishes {
	w := &waitingPublishes{}
	for i := range n {
		for _, tp := range topics {
			name, qos := path.Base(tp), byte(1)
			if name == "q2" {
				qos = 2
			}
			m := fmt.Sprintf("%s-%d", name, i)
			w.wg.Add(1)
			go func() {
				defer w.wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), harness.PublishBound)
				defer cancel()
				r, err := pub.Publish(ctx, &paho.Publish{Topic: tp, QoS: qos, Payload: []byte(m)})
				res := publishResult{m: m, err: err}
				if r != nil {
					res.rc = r.ReasonCode
				}
				w.mu.Lock()
				w.res = append(w.res, res)
				w.mu.Unlock()
			}()
		}
	}
	return w
}

// sent reports whether m is one of the messages published (answered).
func (w *waitingPublishes) sent(m string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.ContainsFunc(w.res, func(r publishResult) bool { return r.m == m })
}

// wait waits for every answer and returns the acknowledged messages and
// how many had an unknown outcome (a failed or refused publish).
func (w *waitingPublishes) wait() (acked []string, unknown int) {
	w.wg.Wait()
	for _, r := range w.res {
		switch {
		case r.err != nil || r.rc >= 0x80:
			unknown++ // not owed, may arrive
		default:
			acked = append(acked, r.m)
		}
	}
	return acked, unknown
}
