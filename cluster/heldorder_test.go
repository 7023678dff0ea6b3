package cluster_test

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestClusterResumedSessionKeepsOrder kills (kill -9) the node of a
// persistent subscriber while a publisher on another node sends QoS 1 and
// 2 without pause, and resumes the session on the third node while the
// publisher goes on: what was held for the dead node and what is
// forwarded to the new one once its interest is known must reach the
// subscriber in the order of publication, per topic [MQTT-4.6.0-5]
// (heldahead.go, and catchup.go for what was held while the claim ran).
// Before, the session was adopted first and the held messages read
// after, behind newer forwarded ones.
func TestClusterResumedSessionKeepsOrder(t *testing.T) {
	t.Parallel() // see harness_test.go
	// No adoption during the test: the session moves by the client's
	// claim only.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Config: "cluster:\n  adopt_after: 60s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	expiry := uint32(600)
	const id = "order-sub"
	_, pub := harness.PersistentPair(t, n1, n2, "order", expiry)

	tc.Kill(n1, syscall.SIGKILL)
	var (
		c        *harness.Client
		order    []string // first arrivals of acknowledged messages
		seen     = map[string]bool{}
		acked    = map[string]bool{}
		unknown  int
		back     <-chan *harness.Client // harness.ResumeInBackground's
		resuming bool
		first    int                               // the first message published after the CONNECT was sent
		resumeAt = time.Now().Add(2 * time.Second) // held for n1 until then
		stop     time.Time                         // 2 s after the resume
		start    = time.Now()
	)
	// Read as it comes: the client's inbox is bounded.
	take := func(m *paho.Publish) {
		if p := string(m.Payload); acked[p] && !seen[p] {
			seen[p] = true
			order = append(order, p)
		}
	}
	for i := 0; stop.IsZero() || time.Now().Before(stop); i++ {
		if time.Since(start) > 90*time.Second {
			t.Fatalf("the session was not resumed on n3 within 90 s; n3:\n%s", harness.GrepLog(n3, "client_id="+id, "cluster:"))
		}
		// At least 40 held first (the streams may elect leaders for
		// seconds after the kill, and the publisher wait).
		if !resuming && time.Now().After(resumeAt) && len(acked) >= 40 {
			resuming, first = true, i
			back = harness.ResumeInBackground(t, n3, id, expiry)
		}
		if resuming && c == nil && len(back) > 0 {
			if c = <-back; c == nil {
				t.Fatalf("%s not resumed with its session on n3 within 60 s", id)
			}
			stop = time.Now().Add(2 * time.Second)
		}
		harness.DrainInbox(c, take)
		for _, qos := range []byte{1, 2} {
			if len(acked)+unknown >= 800 {
				break // the session's queue limit is 1,000: none dropped
			}
			p := fmt.Sprintf("q%d-%06d", qos, i)
			rc, closed := pub.TryPublish(t, &paho.Publish{Topic: fmt.Sprintf("order/q%d", qos), QoS: qos, Payload: []byte(p)})
			switch {
			case closed:
				unknown++ // outcome unknown: not owed, may arrive
				harness.Eventually(t, 30*time.Second, func() error { return harness.Redial(t, n2, "order-pub", &pub) })
			case rc >= 0x80:
				t.Fatalf("publish %s refused: 0x%02X", p, rc)
			default:
				acked[p] = true
			}
		}
		time.Sleep(20 * time.Millisecond) // a paced publisher, as the checker's
	}
	t.Logf("%d messages acknowledged, %d with unknown outcome, the CONNECT sent before #%d", len(acked), unknown, first)
	deadline := time.After(30 * time.Second)
	for len(order) < len(acked) {
		select {
		case m := <-c.In:
			take(m)
		case <-deadline:
			t.Fatalf("%d of %d acknowledged messages lost\nn3:\n%s", len(acked)-len(order), len(acked),
				harness.GrepLog(n3, "client_id="+id, "read ahead", "reading messages held", "held for a node not read"))
		}
	}
	// Per topic, every message comes before any newer one: those
	// published before the CONNECT was sent (held for n1, read ahead),
	// and those published while the claim ran, held after the read ahead
	// and before the publisher saw the session's interest here (the
	// catch-up queues them ahead of what was forwarded meanwhile).
	var out []string
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
	if len(out) > 0 {
		t.Errorf("%d messages came after newer ones of their topic: %v\nn3:\n%s", len(out), out[:min(len(out), 20)],
			harness.GrepLog(n3, "client_id="+id, "held"))
	}
}
