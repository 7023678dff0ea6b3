package cluster_test

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
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
	t.Parallel() // see harness_test.go
	const id = "cu-sub"
	// No adoption by the janitor: the session moves by the client's
	// claim only; room for the elections after the kill.
	cfg := filepath.Join(t.TempDir(), "roost.yaml")
	writeAtomic(t, cfg, []byte("cluster:\n  adopt_after: 60s\n  forward_timeout: 15s\n"), 0o644)
	tc := startClusterFault(t, 3, "adopt-wait="+id+"@n3", "--config", cfg)
	n1, n2, n3 := tc.nodes[0], tc.nodes[1], tc.nodes[2]
	expiry := uint32(600)
	_, pub := persistentPair(t, n1, n2, "cu", expiry)
	tc.kill(n1, syscall.SIGKILL)

	var (
		c       *client
		order   []string // first arrivals of acknowledged messages
		seen    = map[string]int{}
		acked   = map[string]bool{}
		unknown int
		back    <-chan *client
		stop    time.Time // 3 s after the resume: forwards while it catches up
		start   = time.Now()
	)
	take := func(m *paho.Publish) {
		p := string(m.Payload)
		if seen[p]++; seen[p] == 1 && acked[p] {
			order = append(order, p)
		}
	}
	drain := func() { // the client's inbox is bounded
		for c != nil {
			select {
			case m := <-c.in:
				take(m)
			default:
				return
			}
		}
	}
	for i := 0; stop.IsZero() || time.Now().Before(stop); i++ {
		if time.Since(start) > 120*time.Second {
			t.Fatalf("the session was not resumed on n3 within 120 s; n3:\n%s", grepLog(n3, "client_id="+id))
		}
		if back == nil && len(acked) >= 20 {
			back = resumeInBackground(t, n3, id, expiry)
		}
		if back != nil && c == nil && len(back) > 0 {
			if c = <-back; c == nil {
				t.Fatalf("%s not resumed with its session on n3 within 60 s", id)
			}
			stop = time.Now().Add(3 * time.Second)
		}
		drain()
		for _, qos := range []byte{1, 2} {
			if len(acked)+unknown >= 800 {
				break // the session's queue limit is 1,000: none dropped
			}
			p := fmt.Sprintf("q%d-%06d", qos, i)
			rc, closed := pub.tryPublish(t, &paho.Publish{Topic: fmt.Sprintf("cu/q%d", qos), QoS: qos, Payload: []byte(p)})
			switch {
			case closed:
				unknown++ // outcome unknown: not owed, may arrive
				eventually(t, 30*time.Second, func() error { return redial(t, n2, "cu-pub", &pub) })
			case rc >= 0x80:
				t.Fatalf("publish %s refused: 0x%02X", p, rc)
			default:
				acked[p] = true
			}
		}
		time.Sleep(20 * time.Millisecond) // a paced publisher, as the checker's
	}
	if countLog(n3, `"cluster: test fault: adoption waits after the read ahead" node=n3 client_id=`+id) == 0 {
		t.Fatalf("the adoption on n3 did not wait (the test's fault); n3:\n%s", grepLog(n3, "client_id="+id))
	}
	deadline := time.After(30 * time.Second)
	for len(order) < len(acked) {
		select {
		case m := <-c.in:
			take(m)
		case <-deadline:
			t.Fatalf("%d of %d acknowledged messages lost\nn3:\n%s", len(acked)-len(order), len(acked), grepLog(n3, "client_id="+id))
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
		t.Errorf("%d messages came after newer ones of their topic: %v\nn3:\n%s", len(out), out[:min(len(out), 20)],
			grepLog(n3, "client_id="+id, "held"))
	}
	if len(twice) > 0 {
		t.Errorf("%d QoS 2 messages came twice: %v", len(twice), twice[:min(len(twice), 20)])
	}
}
