package repro_test

import (
	"fmt"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"strconv"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// TestReproGroupMoveOrder: a share group's member moving live from n1 to
// n3. From its answer to the release request, n1's copy is disowned and
// kept (keep.go), still the group's member there; n3's move announces
// the group too, and holds what it is given until the adoption. A
// publisher on n2 gave the group's messages to n1 and n3 by turns: n1's
// turns reached the session in the copy's export, delivered first at the
// adoption, n3's after them, held: one publisher's messages to one session
// out of their order (test/jepsen TestClusterFull seed 44 on main,
// 2026-12-06: g0m1 moving n1 -> n3 got pub1#745 and #747, exported by n1,
// before #744 and #746, held by n3; seed 47, g0m1's copy kept on n1 for
// 4 s while n3 served the session: n1's turns came through its held
// subject, 100-300 ms behind n2's direct ones). Here the member is alone
// in its group, its move's finish held back 1.5 s (finish-slow), and the
// publisher sends QoS 1 without waiting for each PUBACK, as the checker's
// publishers do: the member's first deliveries must come in the order the
// messages were published [MQTT-4.6.0-5].
func TestReproGroupMoveOrder(t *testing.T) {
	t.Parallel() // see harness_test.go
	const id, prefix = "mo-m", "mo"
	tc := harness.StartClusterFault(t, 3, "finish-slow="+id+"@n3")
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	old := harness.NewPersistent(t, n1, id, paho.SubscribeOptions{Topic: "$share/" + prefix + "/" + prefix + "/#", QoS: 1})
	pub := harness.Connect(t, n2, prefix+"-pub")
	pub.AwaitInterest(t, prefix+"/t")
	var got []string
	take := func(p *paho.Publish) {
		if s := string(p.Payload); s != "probe" {
			got = append(got, s)
		}
	}
	sent := 0
	send := func() {
		publishAsync(t, pub, n2, &paho.Publish{Topic: prefix + "/t", QoS: 1, Payload: []byte(fmt.Sprintf("%06d", sent))})
		sent++
		time.Sleep(20 * time.Millisecond)
	}
	for range 10 {
		send()
		harness.DrainInbox(old, take)
	}
	quiet(old, take, 300*time.Millisecond)
	if err := old.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatalf("disconnect %s from n1: %v", id, err)
	}
	tc.WaitLog(n1, "client_id="+id+` reason="client disconnected normally"`, 1, 10*time.Second)
	back := harness.ResumeInBackground(t, n3, id, 600)
	var c *harness.Client
	for start := time.Now(); c == nil; {
		if time.Since(start) > 90*time.Second {
			t.Fatalf("%s not resumed on n3 within 90 s; n3:\n%s", id, harness.GrepLog(n3, "client_id="+id))
		}
		select {
		case c = <-back:
			if c == nil {
				t.Fatalf("%s not resumed with its session on n3 within 60 s; n3:\n%s", id, harness.GrepLog(n3, "client_id="+id))
			}
		default:
			send()
		}
	}
	for range 10 {
		send()
		harness.DrainInbox(c, take)
	}
	// Every one of them reaches the member: bounded, and what came is
	// checked for order either way.
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end) && len(firsts(got)) < sent; {
		quiet(c, take, 500*time.Millisecond)
	}
	moved := harness.GrepLog(n3, `msg="session moved here" node=n3 client_id=`+id+` from=n1`)
	t.Logf("%d published, %d reached %s (%d deliveries); n2 left n1 out %d times; the move: %s",
		sent, len(firsts(got)), id, len(got), harness.CountLog(n2, "share group left to a node"), moved)
	last := -1
	var late []string
	for _, s := range firsts(got) {
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
		t.Fatalf("%s got %d of %d messages after newer ones of their publisher: %v", id, len(late), len(firsts(got)), late[:min(len(late), 20)])
	}
	if n := len(firsts(got)); n < sent {
		t.Errorf("%s got %d of %d messages within 30 s", id, n, sent)
	}
	if moved == "" || harness.CountLog(n3, "test fault: the move's finish waits") == 0 {
		// Under load the claim may take the session another way (from
		// the stream, n1's answer too late): the order was checked,
		// the path not.
		t.Skipf("%s did not move live from n1 to n3 with its finish held back: the test missed its path; n3:\n%s",
			id, harness.GrepLog(n3, "client_id="+id))
	}
}
