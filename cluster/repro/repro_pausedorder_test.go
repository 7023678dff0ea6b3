package repro_test

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

// TestReproPausedNodeHeldOrder: a node the others dropped for silence
// (paused) is held for; when it runs again they forward to it at once,
// while what they held for it meanwhile reaches its sessions only through
// its own follower of its held subject (followOwnHeld), later: its
// persistent sessions get newer messages before older ones of the same
// publisher [MQTT-4.6.0-6] (test/jepsen TestClusterFull seed 41 on main,
// 2026-12-06: ps0 on n3, paused 10 s; pub1#431 and pub2#451, forwarded
// at once, queued before pub2#408-#450, held during the pause; n3's held
// subject's stream was electing a leader when it came back). Here n3's
// follower applies each held message only 3 s after it was held
// (held-late), as that election delays it. Now n3's sessions catch up
// when it finds itself silent that long (catchUpOnReturn).
//
// The other way round too: pz-far, persistent on n1, takes QoS 1 from a
// raw publisher on n3 that sends on without waiting for PUBACKs through
// the pause (its socket keeps them) and after. n3, back, dropped n1 at its
// first tick for a silence that was its own, held for pz-far what it
// routed until n1's next heartbeat, then forwarded again; n1, which was
// never silent and so caught nothing up, applied the holds by its
// follower after the newer forwards (test/jepsen TestCluster in a fresh
// clone, session 26: ps0-ps3 and g0m1 got pub0#85 after #89;
// bench/jepsen/RESULTS.md "tc27"). Whether n3 reads n1's heartbeats
// queued in its socket before its first tick after the pause is a race
// (lost in that run, under load: n1's came 161 ms after the drop):
// beat-backlog has n3 read them 300 ms after that tick. held-late on n1
// has its follower lag 2 s, as that run's loaded follower (1.3 s). Now a
// node does not count its own stall as its peers' silence
// (remoteInterest.excuseStall).
func TestReproPausedNodeHeldOrder(t *testing.T) {
	t.Parallel() // see harness.Main
	const id, prefix = "pz-sub", "pz"
	// Nobody adopts n3's session while it is paused: it stays n3's.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "held-late=3s@n3,held-late=2s@n1,beat-backlog=n1@n3", Config: "cluster:\n  adopt_after: 60s\nlimits:\n  max_queued: 100000\n"})
	n1, n3 := tc.Nodes[0], tc.Nodes[2]
	s := harness.NewPersistent(t, n3, id, paho.SubscribeOptions{Topic: prefix + "/q1", QoS: 1}, paho.SubscribeOptions{Topic: prefix + "/q2", QoS: 2})
	far := harness.NewPersistent(t, n1, prefix+"-far", paho.SubscribeOptions{Topic: prefix + "/r", QoS: 1})
	raw, acks := rawAcked(t, n3, prefix+"-raw")
	ro := newRawOrder(raw, prefix+"/r")
	harness.Eventually(t, 20*time.Second, func() error {
		ro.send() // until n3 routes pz/r to n1
		time.Sleep(50 * time.Millisecond)
		harness.DrainInbox(far, ro.take)
		if len(ro.order) == 0 {
			return fmt.Errorf("%s-far got none of %d", prefix, len(ro.sent))
		}
		return nil
	})
	pub := harness.Connect(t, n1, prefix+"-pub")
	pub.AwaitInterest(t, prefix+"/q1")
	pub.AwaitInterest(t, prefix+"/q2")
	pp := &pacedPub{t: t, nd: n1, id: prefix + "-pub", prefix: prefix, pub: pub}
	var got []string
	take := func(p *paho.Publish) {
		if s := string(p.Payload); s != "probe" {
			got = append(got, s)
		}
	}
	tc.Kill(n3, syscall.SIGSTOP)
	for end := time.Now().Add(7 * time.Second); time.Now().Before(end); {
		pp.publish()
		ro.send()
	}
	tc.Kill(n3, syscall.SIGCONT)
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); {
		ro.send() // through n3's first ticks and beat-backlog's hold
		time.Sleep(10 * time.Millisecond)
	}
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
		pp.publish()
		ro.send()
		harness.DrainInbox(s, take)
		harness.DrainInbox(far, ro.take)
	}
	checkFar(t, n3, far, ro, acks)
	if harness.CountLog(n1, `holding a message for a dropped node's persistent sessions" node=n1 peer=n3`) == 0 {
		// n1 drops n3 for its silence only past the heartbeat timeout: a
		// loaded machine can take longer than the pause (seen once in 9
		// runs with a busy core, session 26). Not Roost's failure.
		t.Skipf("n1 held nothing for n3 (it dropped n3 too late, a loaded machine): the test missed its path; n1:\n%s", harness.GrepLog(n1, "peer=n3"))
	}
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end) && len(firsts(got)) < len(pp.want); {
		quiet(s, take, time.Second)
	}
	t.Logf("%d acknowledged, %d unknown; %s got %d (%d deliveries)", len(pp.want), pp.unknown, id, len(firsts(got)), len(got))
	last := map[string]int{}
	var late []string
	for _, m := range firsts(got) {
		q, n, _ := strings.Cut(m, "-")
		i, err := strconv.Atoi(n)
		if err != nil {
			t.Fatalf("%s got %q: not one of the test's messages", id, m)
		}
		if prev, ok := last[q]; ok && i < prev {
			late = append(late, fmt.Sprintf("%s after %s-%d", m, q, prev))
			continue
		}
		last[q] = i
	}
	if len(late) > 0 {
		t.Fatalf("%s got %d messages after newer ones of their publisher: %v", id, len(late), late[:min(len(late), 20)])
	}
}

// checkFar requires every message of ro that n3 acknowledged at far, and
// all of them in the order sent (TestReproPausedNodeHeldOrder's pz-far).
func checkFar(t *testing.T, n3 *harness.Node, far *harness.Client, ro *rawOrder, acks <-chan uint16) {
	t.Helper()
	// Every message, acknowledged or not yet: a forward out to n1 when n3
	// dropped it waits forward_timeout (5 s) for its answer, and the
	// PUBACKs after it wait behind it.
	for end := time.Now().Add(20 * time.Second); len(ro.order) < len(ro.sent) && time.Now().Before(end); {
		quiet(far, ro.take, time.Second)
	}
	acked := map[string]bool{}
	for len(acks) > 0 {
		acked[fmt.Sprintf("q1-%06d", <-acks)] = true // rawOrder.send: the packet id is the number
	}
	missing := ro.missing()
	var lost, late []string
	for _, m := range missing {
		if acked[m] {
			lost = append(lost, m)
		}
	}
	newest := ""
	for _, m := range ro.order {
		if m < newest {
			late = append(late, m+" after "+newest)
		}
		newest = max(newest, m)
	}
	held := harness.CountLog(n3, `holding a message for a dropped node's persistent sessions" node=n3 peer=n1`)
	t.Logf("pz-far: %d sent, %d acknowledged, %d got (missing %v); n3 held %d for n1", len(ro.sent), len(acked), len(ro.order), missing[:min(len(missing), 20)], held)
	if len(lost) > 0 || len(late) > 0 {
		t.Fatalf("pz-far: %d acknowledged lost %v, %d after newer ones %v; n3:\n%s", len(lost), lost[:min(len(lost), 20)], len(late), late[:min(len(late), 20)],
			harness.GrepLog(n3, "peer=n1", "did not run"))
	}
}
