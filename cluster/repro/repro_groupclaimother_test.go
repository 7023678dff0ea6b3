package repro_test

import (
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestReproGroupClaimOtherMember: found by test/jepsen TestClusterFull
// (short faults, seed 194 on main 977c0fb: 9 acknowledged messages lost
// for share group g0). Messages held for n1 with g0 were claimed for
// member g0m0 by n3's read ahead, whose adoption was superseded (and n3
// killed) before it delivered them. n2's read ahead for g0m0 then failed
// ("claiming a held message for its share group: nats: no response from
// stream") and left them to n2's follower of n1's subject, which read
// them with both g0m0 and g0m1 in n2's server. The follower names one
// member per group by the hold's id; where that was g0m1, the claim,
// found made for g0m0, was "another reader's", the group was left out
// and the held copy acknowledged: every message of one parity lost.
//
// Here members gx-a and gx-b of gx live on n1, which is killed with
// messages held for gx after it. gx-a's client connects to n3, whose
// claim reads the held messages ahead, claims them for gx-a and waits
// (adopt-late) until the client connects elsewhere. gx-b resumes on n2
// (its read ahead finds the claims naming gx-a and leaves them), then
// gx-a on n2, superseding n3's claim; n2's read ahead for gx-a fails its
// claims (ahead-unanswered), so n2's follower of n1's subject reads the
// held messages for both. Every acknowledged message must reach gx-a or
// gx-b.
func TestReproGroupClaimOtherMember(t *testing.T) {
	t.Parallel() // see harness.Main
	const a, b = "gx-a", "gx-b"
	// No janitor adoption of n1's sessions meanwhile; room for the
	// elections after n1's kill.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "adopt-late=" + a + "@n3,ahead-unanswered=" + a + "@n2", Config: "cluster:\n  adopt_after: 120s\n  forward_timeout: 15s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	expiry := uint32(600)
	for _, id := range []string{a, b} {
		m, ack := harness.ConnectWith(t, n1, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
		if ack.ReasonCode != 0 {
			t.Fatalf("%s: CONNACK 0x%02X", id, ack.ReasonCode)
		}
		m.Sub(t, paho.SubscribeOptions{Topic: "$share/gx/gx/#", QoS: 1})
	}
	pub := harness.Connect(t, n2, "gx-pub")
	pub.AwaitInterest(t, "gx/t")

	tc.Kill(n1, syscall.SIGKILL)
	want := harness.PublishOwed(t, n2, "gx-pub", &pub, "gx/t", "held", 20)

	// n3's claim of gx-a reads the held messages ahead, claims them for
	// gx-a, and waits. (A claim may fail at first: the streams elect
	// leaders after the kill. The CONNECTs stay open: the client never
	// sees a CONNACK.)
	held := `test fault: adoption held until the client id is claimed again elsewhere" node=n3 client_id=` + a
	claimUntil(t, n3, a, expiry, 90*time.Second, func() bool { return harness.CountLog(n3, held) > 0 })
	bc := harness.Resume(t, n2, b, expiry, 60*time.Second)
	ac := harness.Resume(t, n2, a, expiry, 60*time.Second)
	tc.WaitLog(n3, `session taken from the stream not adopted: its client id was claimed again meanwhile" node=n3 client_id=`+a, 1, 30*time.Second)
	tc.WaitLog(n2, `messages held for a node not read yet; following" node=n2 client_id=`+a+" peer=n1", 1, 30*time.Second)

	got, lost := receiveEither(want, 30*time.Second, ac, bc)
	if len(lost) > 0 {
		t.Fatalf("%d of %d acknowledged messages never reached a member of the group: %v\ngot: %v\nn2:\n%s\nn3:\n%s", len(lost), len(want), lost, got,
			harness.GrepLog(n2, a, b, "share group"), harness.GrepLog(n3, a))
	}
	// gx-b's read ahead found the claims n3 made for gx-a, and says so.
	if k := harness.CountLog(n2, `held message's share group claimed for another member; left out here" node=n2 client_id=`+b+" claimed_for="+a); k == 0 {
		t.Errorf("n2 logged no held group message of %s's read ahead left out for a claim naming %s; n2:\n%s", b, a, harness.GrepLog(n2, b))
	}
	t.Logf("n2: %d held group messages claimed for %s delivered to it when the turn named another member",
		harness.CountLog(n2, `held message's share group claimed for another member here; delivered to it" node=n2 client_id=`+a), a)
}

// receiveEither reads the messages of cs (probes skipped) until each of
// want came to one of them at least once or d passed. It returns who got
// each message and the messages of want that never came.
func receiveEither(want []string, d time.Duration, cs ...*harness.Client) (got map[string][]string, lost []string) {
	got = map[string][]string{}
	deadline := time.Now().Add(d)
	for missing := len(want); missing > 0 && time.Now().Before(deadline); {
		for _, c := range cs {
			harness.DrainInbox(c, func(p *paho.Publish) {
				s := string(p.Payload)
				if s == "probe" {
					return
				}
				if len(got[s]) == 0 && slices.Contains(want, s) {
					missing--
				}
				got[s] = append(got[s], c.ID)
			})
		}
		time.Sleep(20 * time.Millisecond)
	}
	lost = slices.DeleteFunc(slices.Clone(want), func(s string) bool { return len(got[s]) > 0 })
	return got, lost
}
