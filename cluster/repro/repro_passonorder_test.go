package repro_test

import (
	"fmt"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestReproPassOnOrder: a restarted node announces its restored sessions'
// share group memberships as routing interest, so a publisher elsewhere
// gives it its turns of the group's messages, and the node passes them on
// to a node with a live member (passon.go). That member gets the group's
// other turns directly from the publisher's node: one publisher's
// messages reach one session by two ways, one a hop longer, and come out
// of their order [MQTT-4.6.0-6] (test/jepsen TestClusterFull seed 42 on
// main, 2026-12-06: g0m0 on n2 got pub1#121, forwarded by n3, before
// pub1#119, which n3 gave to n1, whose restored g0m1 was unsettled for
// 8 s, and n1 passed on 190 ms later). Here m1 is a persistent member on
// n1, m0 one on n2; n1 is killed and comes back with owners-late (its
// restored m1 unsettled for 8 s) and passon-late (its passing on 300 ms
// slower than a direct forward), while n3's publisher sends QoS 1
// messages to the group without waiting for each PUBACK, as the checker's
// publishers do. m0 must get them in the order they were published.
func TestReproPassOnOrder(t *testing.T) {
	t.Parallel() // see harness.Main
	const prefix = "po"
	// No adoption while n1 is dead: m1 stays n1's, restored when it is
	// back.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Config: "cluster:\n  adopt_after: 60s\nlimits:\n  max_queued: 100000\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	share := paho.SubscribeOptions{Topic: "$share/" + prefix + "/" + prefix + "/#", QoS: 1}
	m1 := harness.NewPersistent(t, n1, prefix+"-m1", share)
	if err := m1.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatalf("disconnect m1: %v", err)
	}
	m0 := harness.NewPersistent(t, n2, prefix+"-m0", share)
	pub := harness.Connect(t, n3, prefix+"-pub")
	pub.AwaitInterest(t, prefix+"/t")

	tc.Kill(n1, syscall.SIGKILL)
	n1.Env = append(n1.Env, "ROOST_TEST_FAULT=owners-late=8s@n1,passon-late=300ms@n1")
	catchUp := markCatchUp(n1)
	tc.Start(n1)
	// Once n1 knows where the group's other members are (before, what
	// it is given it keeps for m1). n3 learns n1's interest within
	// moments of hearing it: the path check below says whether n3 had
	// it while m1 was unsettled.
	if !catchUp.await(t) {
		t.Skipf("n1 served before it had its peers' interest: the test missed its path; n1:\n%s",
			harness.GrepLog(n1, "cluster interest", "interest snapshot"))
	}
	const ownersRead = `msg="cluster: owners of restored sessions read" node=n1`
	var got []string
	take := func(p *paho.Publish) {
		if s := string(p.Payload); s != "probe" {
			got = append(got, s)
		}
	}
	sent := 0
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end) && harness.CountLog(n1, ownersRead) == 0; sent++ {
		publishAsync(t, pub, n3, &paho.Publish{Topic: prefix + "/t", QoS: 1, Payload: []byte(fmt.Sprintf("%06d", sent))})
		harness.DrainInbox(m0, take)
		time.Sleep(20 * time.Millisecond)
	}
	// Every one of them reaches m0 (m1 is offline, its copy unsettled):
	// bounded, and what came is checked for order either way.
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end) && len(firsts(got)) < sent; {
		quiet(m0, take, 500*time.Millisecond)
	}
	passed := harness.CountLog(n1, "passed on to a node with a member")
	leftOut := harness.CountLog(n3, "share group left to a node with a live member")
	t.Logf("%d published, %d reached m0 (%d deliveries); n1 passed %d on, n3 left n1 out %d times",
		sent, len(firsts(got)), len(got), passed, leftOut)
	if passed == 0 && leftOut == 0 {
		t.Fatalf("n3 neither routed the group to n1 nor left n1 out while its m1 was unsettled: the test missed its path; n1:\n%s",
			harness.GrepLog(n1, "cluster:", "restored"))
	}
	last := -1
	var late []string
	for _, s := range firsts(got) {
		i, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("m0 got %q: not one of the test's messages", s)
		}
		if i < last {
			late = append(late, fmt.Sprintf("%06d after %06d", i, last))
			continue
		}
		last = i
	}
	if len(late) > 0 {
		t.Fatalf("m0 got %d of %d messages after newer ones of their publisher: %v", len(late), len(firsts(got)), late[:min(len(late), 20)])
	}
	if n := len(firsts(got)); n < sent {
		t.Errorf("m0 got %d of %d messages within 30 s", n, sent)
	}
}

// firsts is got without repeats (a QoS 1 redelivery), in first-arrival
// order.
func firsts(got []string) []string {
	seen := make(map[string]bool, len(got))
	out := make([]string, 0, len(got))
	for _, s := range got {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
