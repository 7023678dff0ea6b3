package cluster_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/internal/clustertest"
	"github.com/roost-mqtt/roost/internal/diskfull"
)

// TestClusterDiskFullPersistent: the persistent-session row of the promise
// table for a full disk. A persistent session lives on n3, whose store
// and JetStream replicas are on a small tmpfs that fills up. n3 cannot
// keep what is forwarded for the session, and says so; the publisher's
// node cannot tell what of the message its other targets kept, so it
// closes the publisher's connection (outcome unknown) rather than answer
// 0x00 (a loss) or 0x97 (which invites a resend, a duplicate for them).
// Nothing acknowledged may be lost: the client, moving to n1 while n3's
// disk is still full, gets Session Present and every acknowledged
// message, QoS 2 once, and new messages; once the disk is freed, n3
// serves the session again.
func TestClusterDiskFullPersistent(t *testing.T) {
	t.Parallel() // see harness_test.go
	mnt := diskfull.Tmpfs(t, "48m")
	cfg := filepath.Join(t.TempDir(), "roost.yaml")
	writeAtomic(t, cfg, []byte("store:\n  min_free: 4MiB\n  ballast: 1MiB\n"), 0o644)
	tc := wrapCluster(t, clustertest.Start(t, clustertest.Options{Nodes: 3, Args: []string{"--config", cfg},
		Data: func(name string) string {
			if name == "n3" {
				return filepath.Join(mnt, name)
			}
			return ""
		}}))
	n1, n3 := tc.nodes[0], tc.nodes[2]
	sub, pub := persistentPair(t, n3, n1, "dfp", queuedExpiry)
	drainInbox(sub, func(*paho.Publish) {})
	before := publishOwedQoS(t, n1, "dfp-pub", &pub, "dfp/q2", "before", 5, 2)
	checkOwed(t, sub, before, func(p string) bool { return strings.HasPrefix(p, "before-") })

	filler := filepath.Join(mnt, "filler")
	diskfull.Fill(t, filler)
	freed := false
	defer func() {
		if !freed {
			os.Remove(filler)
		}
	}()

	// Messages for the session on the full node: the connection closed
	// (outcome unknown, not owed; what n3 does today), or acknowledged
	// (owed) or refused (0x80 and up: not owed), which would be safe too.
	var owed []string
	refused := 0
	for i := range 40 {
		payload, rc, closed := publishMixed(t, n1, "dfp-pub", &pub, "dfp", "full", i)
		switch {
		case closed:
		case rc >= 0x80:
			refused++
		case rc != 0:
			t.Errorf("%s for a persistent session on the full node: 0x%02X, want 0x00 or a refusal", payload, rc)
		default:
			owed = append(owed, payload)
		}
	}
	t.Logf("with n3's disk full: %d of 40 acknowledged for the session there, %d refused", len(owed), refused)

	// The client moves to n1 while n3's disk is still full.
	sub.Disconnect(&paho.Disconnect{})
	back := resume(t, n1, "dfp-sub", queuedExpiry, partitionBound)
	checkOwed(t, back, owed, func(p string) bool { return strings.HasPrefix(p, "full-") })
	after := publishOwedQoS(t, n1, "dfp-pub", &pub, "dfp/q2", "moved", 5, 2)
	checkOwed(t, back, after, func(p string) bool { return strings.HasPrefix(p, "moved-") })

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	freed = true
	// Once freed, n3 takes the session back.
	back.Disconnect(&paho.Disconnect{})
	again := resume(t, n3, "dfp-sub", queuedExpiry, partitionBound)
	last := publishOwedQoS(t, n1, "dfp-pub", &pub, "dfp/q2", "freed", 5, 2)
	checkOwed(t, again, last, func(p string) bool { return strings.HasPrefix(p, "freed-") })
}
