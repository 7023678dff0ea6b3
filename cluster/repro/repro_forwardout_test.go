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
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"github.com/roost-mqtt/roost/internal/clustertest"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// TestReproForwardOutReheld: a claim that takes a session from the stream
// on the publisher's node right after the session's node died must not end
// its catch-up before that node's forwards out to the dead node were held
// for it: held only when the node is dropped (up to 250 ms after its routes
// closed), they came through the follower behind the publisher's newer
// messages, delivered locally meanwhile [MQTT-4.6.0-5] (test/jepsen
// TestClusterFull seed 53: ps1 got pub0#530, forwarded from n1 to n3 2 ms
// before n3's kill and held for n3 at 25.100, after #532 and #536; n1's
// claim's catch-up had ended at 24.983; bench/jepsen/RESULTS.md "ps53",
// "ord53").
//
// Here fo-sub is on n3, a raw publisher on n1 sends QoS 1 without waiting
// for PUBACKs; n3 is killed right after a publish. n1 drops n3 only once a
// session caught up on n1 after that, at most 20 s after n3's routes
// closed (gone-late; kept heard from too): the forwards out to n3 stay unsettled across the
// claim's read ahead and adoption, as seed 53's 100 ms. The client resumes
// on n1 3 s after the kill, the streams' elections over (a CONNECT sent
// at once waited for the owner record's leader up to forward_timeout, past
// the fault's bound, in 1 of 2 runs). Every acknowledged message must
// come, first deliveries in publication order; a run whose drop came
// before the adoption missed the path and is skipped.
func TestReproForwardOutReheld(t *testing.T) {
	t.Parallel() // see harness.Main
	const id, prefix = "fo-sub", "fo"
	// The session moves by the client's claim only; the forwards out
	// to n3 outlast gone-late's bound (20 s).
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "gone-late=n3@n1", Config: "cluster:\n  adopt_after: 60s\n  forward_timeout: 30s\n"})
	n1, n3 := tc.Nodes[0], tc.Nodes[2]
	expiry := uint32(600)
	s3, pp := harness.PersistentPair(t, n3, n1, prefix, expiry)
	pp.Disconnect(&paho.Disconnect{})

	pub, acks := rawAcked(t, n1, prefix+"-raw")

	var (
		sub   *harness.Client
		back  <-chan *harness.Client
		stop  time.Time // 3 s after the resume
		kill  time.Time
		sent  []string // by packet id - 1
		acked = map[string]bool{}
		seen  = map[string]int{}
		order []string // first arrivals
	)
	take := func(m *paho.Publish) {
		p := string(m.Payload)
		if p == "probe" {
			return // PersistentPair's AwaitInterest
		}
		if seen[p]++; seen[p] == 1 {
			order = append(order, p)
		}
	}
	readAcks := func() {
		for {
			select {
			case pid, ok := <-acks:
				if !ok {
					t.Fatalf("the publisher's connection to n1 closed")
				}
				acked[sent[pid-1]] = true
			default:
				return
			}
		}
	}
	for i := 1; stop.IsZero() || time.Now().Before(stop); i++ {
		if i > 4000 {
			t.Fatalf("%s not resumed on n1 within 4,000 rounds; n1:\n%s", id, harness.GrepLog(n1, "client_id="+id))
		}
		// At most 800 before the resume: a claim that waits long (33 s
		// seen under load) would otherwise take more than the session's
		// queue holds (queue_full), a loss of the test's making.
		if n := len(sent) + 1; sub != nil || n <= 800 {
			p := fmt.Sprintf("q1-%06d", n)
			sent = append(sent, p)
			pub.Send(&packet.Publish{QoS: 1, Topic: prefix + "/q1", PacketID: uint16(n), Payload: []byte(p)})
			if n == 30 {
				// Right after a forward to n3: it stays out, unconfirmed.
				harness.DrainInbox(s3, take)
				tc.Kill(n3, syscall.SIGKILL)
				kill = time.Now()
			}
			if n < 30 {
				harness.DrainInbox(s3, take)
			}
		}
		if back == nil && !kill.IsZero() && time.Since(kill) > 3*time.Second {
			back = harness.ResumeInBackground(t, n1, id, expiry)
		}
		if back != nil && sub == nil && len(back) > 0 {
			if sub = <-back; sub == nil {
				t.Fatalf("%s not resumed with its session on n1 within 60 s", id)
			}
			stop = time.Now().Add(3 * time.Second)
		}
		harness.DrainInbox(sub, take)
		readAcks()
		time.Sleep(20 * time.Millisecond) // a paced publisher, as the checker's
	}
	// What reached fo-sub's client on n3 between the last drain and the
	// kill counts: q1-000030 was forwarded 1 ms before it, and a copy
	// that n3 delivered and saw acknowledged is in no queue afterwards
	// (session 26: "lost 1 of 922", q1-000030, in 1 run of 9).
	harness.DrainInbox(s3, take)
	// Waited on while messages come: 30 s without one ends it, 2 min at
	// most. A fixed 30 s ended 3 s after n1's catch-up ran out its own
	// 30-s bound (forward_timeout) and began to send, with 319 of 456
	// acknowledged messages not there yet, counted lost (load 100,
	// session 32, hunta32: the forwards out to n3 settled 22.7 s into
	// the adoption, by gone-late's bound).
	idle := time.Now().Add(30 * time.Second)
	for limit := time.Now().Add(2 * time.Minute); time.Now().Before(idle) && time.Now().Before(limit); {
		readAcks()
		missing := slices.ContainsFunc(sent, func(p string) bool { return acked[p] && seen[p] == 0 })
		if !missing && len(acked) == len(sent) {
			break
		}
		select {
		case m := <-sub.In:
			take(m)
			idle = time.Now().Add(30 * time.Second)
		case <-time.After(100 * time.Millisecond):
		}
	}
	if harness.CountLog(n1, `"cluster: test fault: a node whose routes closed is dropped late" node=n1 peer=n3`) == 0 {
		t.Fatalf("n1 did not keep n3 after its routes closed (the test's fault); n1:\n%s", harness.GrepLog(n1, "peer=n3"))
	}
	var lost, late []string
	for _, p := range sent {
		if acked[p] && seen[p] == 0 {
			lost = append(lost, p)
		}
	}
	last := -1
	for _, p := range order {
		i, err := strconv.Atoi(strings.TrimPrefix(p, "q1-"))
		if err != nil {
			t.Fatalf("%s got %q: not one of the test's messages", id, p)
		}
		if i < last {
			late = append(late, fmt.Sprintf("%s after q1-%06d", p, last))
		}
		last = max(last, i)
	}
	t.Logf("%d sent, %d acknowledged; %s got %d (%d first deliveries)", len(sent), len(acked), id, len(seen), len(order))
	if len(lost) > 0 {
		t.Errorf("%d acknowledged messages lost: %v", len(lost), lost[:min(len(lost), 20)])
	}
	// At its bound a catch-up gives the session what comes later before
	// what was held for it was read, and order is not promised from there
	// (docs/cluster.md, "catching up took too long"): n1's forwards out to
	// n3 settled only 18 s into the adoption (gone-late's bound at load
	// 120, race-built roost), their holds were read past forward_timeout's
	// 30 s, and 95 came after the newest (1 run of 2, session 32). The path
	// was missed; a loss above still fails.
	const tooLong = `"cluster: session sends before what was held for it was read: catching up took too long" node=n1 client_id=`
	if len(late) > 0 && harness.CountLog(n1, tooLong+id) > 0 {
		t.Skipf("n1's catch-up of %s ran out its bound before the held forwards were read, and %d came after newer ones (order not promised past it): the test missed its path; n1:\n%s",
			id, len(late), harness.GrepLog(n1, "client_id="+id+" peer=n3", tooLong+id))
	}
	if len(late) > 0 {
		t.Errorf("%d messages came after newer ones of their publisher: %v\nn1:\n%s", len(late), late[:min(len(late), 20)],
			harness.GrepLog(n1, "session moved here", "caught up", "forwards out", "cluster node gone", "dropped late"))
	}
	// The path: n1 took the session from the stream before it dropped n3.
	path := harness.GrepLog(n1, `msg="session moved here" node=n1 client_id=`+id, `msg="cluster node gone: no route" node=n1 peer=n3`)
	if moved := strings.Index(path, "session moved here"); moved < 0 || moved > strings.Index(path, "cluster node gone") {
		t.Skipf("n1 dropped n3 before it adopted %s: the path was missed; n1:\n%s", id, path)
	}
}

// rawAcked connects a raw MQTT 5 publisher id to nd and reads its
// PUBACKs in the background while the test sends on: acks gets the packet
// id of each one below 0x80, and is closed when the connection ends.
func rawAcked(t *testing.T, nd *harness.Node, id string) (*mqtttest.Client, <-chan uint16) {
	t.Helper()
	pub := mqtttest.Dial(t, nd.MQTT, packet.V5)
	pub.Connect(&packet.Connect{ClientID: id, CleanStart: true, KeepAlive: 30})
	acks := make(chan uint16, 4096)
	go func() {
		defer close(acks)
		for {
			p, err := pub.Read(5 * time.Minute)
			if err != nil {
				return
			}
			if a, ok := p.(*packet.Puback); ok && a.ReasonCode < 0x80 {
				acks <- a.PacketID
			}
		}
	}()
	return pub, acks
}

// rawOrder is what a raw publisher sent, QoS 1 q1-000001, q1-000002, ...
// on topic, and what its subscriber got of them (seen) and in which order
// of first arrivals (order), for the tests of held copies' order.
type rawOrder struct {
	pub   *mqtttest.Client
	topic string
	sent  []string
	seen  map[string]int
	order []string
}

func newRawOrder(pub *mqtttest.Client, topic string) *rawOrder {
	return &rawOrder{pub: pub, topic: topic, seen: map[string]int{}}
}

// send publishes the next message, its packet id its number.
func (r *rawOrder) send() {
	p := fmt.Sprintf("q1-%06d", len(r.sent)+1)
	r.sent = append(r.sent, p)
	r.pub.Send(&packet.Publish{QoS: 1, Topic: r.topic, PacketID: uint16(len(r.sent)), Payload: []byte(p)})
}

// take notes a message the subscriber got (probes skipped).
func (r *rawOrder) take(m *paho.Publish) {
	p := string(m.Payload)
	if p == clustertest.Probe {
		return // PersistentPair's AwaitInterest
	}
	if r.seen[p]++; r.seen[p] == 1 {
		r.order = append(r.order, p)
	}
}

// sendFirst sends n messages paced as the checker's publishers, and waits
// until sub (its inbox handed to take) got them all.
func (r *rawOrder) sendFirst(t *testing.T, sub *harness.Client, take func(*paho.Publish), n int) {
	t.Helper()
	r.sendPaced(n)
	harness.Eventually(t, 10*time.Second, func() error {
		harness.DrainInbox(sub, take)
		if len(r.order) < n {
			return fmt.Errorf("%s got %v of the first %d", sub.ID, r.order, n)
		}
		return nil
	})
}

// sendPaced sends n messages 20 ms apart, as the checker's publishers.
func (r *rawOrder) sendPaced(n int) {
	for range n {
		r.send()
		time.Sleep(20 * time.Millisecond)
	}
}

// awaitLast waits until sub (its inbox handed to take) got the last
// message sent.
func (r *rawOrder) awaitLast(t *testing.T, sub *harness.Client, take func(*paho.Publish)) {
	t.Helper()
	harness.Eventually(t, 30*time.Second, func() error {
		harness.DrainInbox(sub, take)
		if r.seen[r.sent[len(r.sent)-1]] == 0 {
			return fmt.Errorf("%s got %v", sub.ID, r.order)
		}
		return nil
	})
}

// missing is what was sent and never got.
func (r *rawOrder) missing() []string {
	var m []string
	for _, p := range r.sent {
		if r.seen[p] == 0 {
			m = append(m, p)
		}
	}
	return m
}
