package repro_test

import (
	"fmt"
	"path/filepath"
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
func TestReproPausedNodeHeldOrder(t *testing.T) {
	t.Parallel() // see harness.Main
	const id, prefix = "pz-sub", "pz"
	cfg := filepath.Join(t.TempDir(), "roost.yaml")
	// Nobody adopts n3's session while it is paused: it stays n3's.
	harness.WriteAtomic(t, cfg, []byte("cluster:\n  adopt_after: 60s\nlimits:\n  max_queued: 100000\n"), 0o644)
	tc := harness.StartClusterFault(t, 3, "held-late=3s@n3", "--config", cfg)
	n1, n3 := tc.Nodes[0], tc.Nodes[2]
	s := harness.NewPersistent(t, n3, id, paho.SubscribeOptions{Topic: prefix + "/q1", QoS: 1}, paho.SubscribeOptions{Topic: prefix + "/q2", QoS: 2})
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
	}
	tc.Kill(n3, syscall.SIGCONT)
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
		pp.publish()
		harness.DrainInbox(s, take)
	}
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
