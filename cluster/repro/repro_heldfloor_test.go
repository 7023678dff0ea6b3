package repro_test

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestReproHeldFollowerFloor: a node's follower of a dead node's held
// subject gives a session taken from the stream nothing held before the
// session's last op, however far back another session makes it read.
// Before, the follower read by one time for all its sessions (the
// earliest last op among them) and gave each all it read: hf-a's follower
// on n2 started before m1 was held; hf-b, which got m1 on n1 and then came
// to n2 from the stream (its last op after m1, its own read of n3's held
// subject empty), joined that follower, which read again from hf-a's time
// and gave hf-b m1 a second time, a QoS 2 duplicate (test/jepsen
// TestClusterFull seed 42, 2026-12-05 06:27: 132 for ps2).
func TestReproHeldFollowerFloor(t *testing.T) {
	t.Parallel() // see harness.Main
	// A long adopt_after: no janitor adopts the sessions of the dead
	// n3, and n2's follower outlives the test. A long forward_timeout:
	// m1's hold for n3 waits for its partition stream's election after
	// n3's kill (more than the default 5 s on a busy machine; the
	// publisher's connection was closed).
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Config: "cluster:\n  adopt_after: 120s\n  forward_timeout: 15s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	const expiry = 300
	subA := harness.OriginSub(t, n3, "hf-a", "hf/#")
	subB := harness.OriginSub(t, n3, "hf-b", "hf/#")
	harness.AwaitOriginProbes(t, n1, "hf/probe", subA, subB)
	pub := harness.Connect(t, n1, "hf-pub")

	// n3 dies; m1 is held for its sessions.
	tc.Kill(n3, syscall.SIGKILL)
	harness.Eventually(t, 60*time.Second, func() error {
		if rc, closed := pub.TryPublish(t, &paho.Publish{Topic: "hf/x", QoS: 2, Payload: []byte("m1")}); closed {
			// The outcome is unknown: publish again on a new connection.
			if err := harness.Redial(t, n1, "hf-pub", &pub); err != nil {
				return err
			}
			return errors.New("connection closed before the PUBREC")
		} else if rc != 0 {
			return fmt.Errorf("PUBREC 0x%02X", rc)
		}
		return nil
	})

	// hf-a comes to n2 from the stream: n2's follower of n3's held
	// subject starts from hf-a's last op, before m1. hf-b comes to n1
	// and gets m1 there.
	a := harness.Resume(t, n2, "hf-a", expiry, 60*time.Second)
	nextPayload(t, a, "m1")
	b := harness.Resume(t, n1, "hf-b", expiry, 60*time.Second)
	nextPayload(t, b, "m1")
	// Completed on n1 before the client leaves: else m1 is still in
	// flight in hf-b's record, and its resend on n2 (DUP) is no fault.
	// (Seen once the adoption's catch-up sent m1 at its end, 6 ms
	// before this DISCONNECT, which left before the client's PUBREC.)
	tc.WaitLog(n1, "client_id=hf-b type=PUBCOMP", 1, 30*time.Second)
	b.Disconnect(&paho.Disconnect{})

	// n3 back (n2 and n3 keep a quorum), n1 paused: hf-b's claim on n2
	// is not answered and reads hf-b from the stream; its last op is
	// after m1, so its own read of n3's held subject finds nothing.
	restored := harness.WatchRestored(n3, "hf-b")
	tc.Start(n3)
	restored.Wait(t, 60*time.Second, nil) // dropped, or fenced before the owners read
	tc.Kill(n1, syscall.SIGSTOP)
	defer tc.Kill(n1, syscall.SIGCONT)
	b = harness.Resume(t, n2, "hf-b", expiry, 60*time.Second)
	if harness.CountLog(n2, `"session moved here" node=n2 client_id=hf-b from="replicated record"`) == 0 {
		t.Fatalf("n2 did not read hf-b from the stream: the test did not take its path; n2:\n%s", harness.GrepLog(n2, "hf-b"))
	}
	// The follower reads m1 again, now with hf-b among its sessions
	// (hf-a's copy is dropped by its watch); hf-b must not get it.
	harness.Eventually(t, 20*time.Second, func() error {
		for _, l := range strings.Split(harness.GrepLog(n2, `"cluster: message held for a node read" node=n2 peer=n3`), "\n") {
			if strings.HasSuffix(l, "ids=2") {
				return nil
			}
		}
		return fmt.Errorf("n2's follower of n3's held subject has not read with both sessions yet")
	})
	b.None(t, 2*time.Second)
}

// nextPayload waits for c's next message and checks its payload. A minute:
// at load 25-30 the held reads of a session taken from the stream fail
// for a while ("not read yet; following") before its follower brings it.
func nextPayload(t *testing.T, c *harness.Client, want string) {
	t.Helper()
	if p := c.Next(t, 60*time.Second); string(p.Payload) != want {
		t.Fatalf("%s got %q on %s, want %q", c.ID, p.Payload, p.Topic, want)
	}
}
