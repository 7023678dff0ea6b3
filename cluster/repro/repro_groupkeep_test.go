package repro_test

import (
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestReproFenceWindowGroup: the fence window (repro_fencewin_test.go)
// for share groups. fg-sub's persistent session on n2, offline, is a
// member of group ga (its only member) and of group gb, whose other
// member, fg-live, stays connected to n2. Its client connects to n3,
// whose release request waits (delay-release) while n3 is paused: n2
// fences its copy, and a publisher on n1 sends QoS 1 and 2 messages to
// both groups until the copy ends (fenceGrace); then n3 is killed and the
// client resumes on n1.
//
// Before, n2 gave a group's message to its disowned copy as to any
// member: half of gb's and all of ga's went into the copy and ended with
// it, acknowledged (test/jepsen TestClusterFull seed 42, group g0). Every
// acknowledged message must reach its group (gb: fg-live, or fg-sub where
// it resumed; ga: fg-sub), a QoS 2 one once per group.
func TestReproFenceWindowGroup(t *testing.T) {
	t.Parallel() // see harness.Main
	const id = "fg-sub"
	tc, expiry := offlineOnN2(t, id, "delay-release="+id+"@n3",
		paho.SubscribeOptions{Topic: "$share/ga/fg/a/+", QoS: 2}, paho.SubscribeOptions{Topic: "$share/gb/fg/b/+", QoS: 2})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	live := harness.Connect(t, n2, "fg-live")
	live.Sub(t, paho.SubscribeOptions{Topic: "$share/gb/fg/b/+", QoS: 2})
	pub := harness.Connect(t, n1, "fg-pub")
	pub.AwaitInterest(t, "fg/a/x")
	pub.AwaitInterest(t, "fg/b/x")

	claimOn(t, tc, n3, id, expiry)
	tc.Kill(n3, syscall.SIGSTOP)
	tc.WaitLog(n2, `(owner records)" node=n2 client_id=`+id, 1, 60*time.Second)
	ended := `"session ended: its client id is owned by another node" client_id=` + id
	if harness.CountLog(n2, ended) > 0 {
		t.Fatalf("n2's copy of %s ended before the test published into its fence window", id)
	}

	got := map[string]int{} // per group: "ga a-q2-000003"
	take := func(p *paho.Publish) {
		if s := string(p.Payload); s != "probe" {
			got["g"+s[:1]+" "+s]++
		}
	}
	// Into the window until the copy's end: a message matched as the
	// copy left the tree, or forwarded to n2 just after, before n1 saw
	// the end's hold keys, must reach the group too (keep.go, the copy's
	// end).
	var acked []string
	unknown := 0
	for i, bound := 0, time.Now().Add(60*time.Second); time.Now().Before(bound) && harness.CountLog(n2, ended) == 0; i++ {
		harness.DrainInbox(live, take)
		for _, g := range []string{"a", "b"} {
			for _, qos := range []byte{1, 2} {
				p := fmt.Sprintf("%s-q%d-%06d", g, qos, i)
				rc, closed := pub.TryPublish(t, &paho.Publish{Topic: fmt.Sprintf("fg/%s/q%d", g, qos), QoS: qos, Payload: []byte(p)})
				switch {
				case closed:
					unknown++ // outcome unknown: not owed, may arrive
					harness.Eventually(t, 30*time.Second, func() error { return harness.Redial(t, n1, "fg-pub", &pub) })
				case rc >= 0x80:
					t.Fatalf("publish %s refused: 0x%02X", p, rc)
				default:
					acked = append(acked, p)
				}
			}
		}
		time.Sleep(20 * time.Millisecond) // a paced publisher, as the checker's
	}
	t.Logf("%d messages acknowledged in the fence window, %d with unknown outcome", len(acked), unknown)
	tc.WaitLog(n2, ended, 1, 60*time.Second)
	tc.Kill(n3, syscall.SIGKILL)
	back := harness.Resume(t, n1, id, expiry, 60*time.Second)

	missing := func() []string {
		var out []string
		for _, p := range acked {
			if got["g"+p[:1]+" "+p] == 0 {
				out = append(out, p)
			}
		}
		return out
	}
	for deadline := time.After(30 * time.Second); len(missing()) > 0; {
		select {
		case p := <-back.In:
			take(p)
		case p := <-live.In:
			if strings.HasPrefix(string(p.Payload), "a-") {
				t.Errorf("fg-live, not a member of ga, got %s", p.Payload)
			}
			take(p)
		case <-deadline:
			lost := missing()
			t.Fatalf("%d of %d acknowledged messages never reached their group: %v\nn2:\n%s\nn1:\n%s", len(lost), len(acked),
				lost[:min(len(lost), 20)], harness.GrepLog(n2, "client_id="+id), harness.GrepLog(n1, "client_id="+id))
		}
	}
	// Late copies would be duplicates: give them a second.
	for end := time.After(time.Second); ; {
		select {
		case p := <-back.In:
			take(p)
			continue
		case p := <-live.In:
			take(p)
			continue
		case <-end:
		}
		break
	}
	var twice []string
	for k, n := range got {
		if n > 1 && strings.Contains(k, "-q2-") {
			twice = append(twice, fmt.Sprintf("%s (%d)", k, n))
		}
	}
	slices.Sort(twice)
	if len(twice) > 0 {
		t.Errorf("%d QoS 2 messages delivered more than once to their group: %v", len(twice), twice[:min(len(twice), 20)])
	}
	keptOn(t, n2, id)
}

// offlineOnN2 starts the fence-window tests' three nodes (no adoption,
// forward_timeout 15 s, with faults) and leaves id's persistent session
// on n2, subscribed to subs, offline; it returns the session's expiry.
func offlineOnN2(t *testing.T, id, faults string, subs ...paho.SubscribeOptions) (*harness.Cluster, uint32) {
	t.Helper()
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: faults, Config: "cluster:\n  adopt_after: 60s\n  forward_timeout: 15s\n"})
	n2 := tc.Nodes[1]
	expiry := uint32(harness.QueuedExpiry)
	sub, ack := harness.ConnectWith(t, n2, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
	if ack.ReasonCode != 0 {
		t.Fatalf("CONNACK 0x%02X", ack.ReasonCode)
	}
	sub.Sub(t, subs...)
	sub.Disconnect(&paho.Disconnect{}) // the session stays on n2, offline
	tc.WaitLog(n2, "client_id="+id+` reason="client disconnected normally"`, 1, harness.Wait)
	return tc, expiry
}
