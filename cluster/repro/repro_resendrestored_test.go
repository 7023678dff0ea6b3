package repro_test

import (
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// TestReproResendRestoredCopy: QoS 2 m1's first routing on n3, while n1
// is dead, gives share group rr to its live member rr-b on n2, which
// claims it for rr-b; the forward is not confirmed (fault unconfirmed),
// so the publisher is not answered. n1 comes back reading its own held
// subject empty for a while (held-empty): rr-a's restored copy there
// stays unsettled, an away copy. The publisher resumes on n1 and sends
// m1 again. Before, the resend's group went to the away copy unclaimed
// ("its reader claims"), but a restored copy that settles as its
// session's owner has no reader: rr-a got m1 too (test/jepsen
// TestClusterFull short faults, seed 539: g1m0 and g1m1 got pub0#210;
// bench/jepsen/RESULTS.md, "runs26"). Now the resend claims the group
// for the away copy as well, finds it claimed for rr-b and leaves it out.
func TestReproResendRestoredCopy(t *testing.T) {
	t.Parallel() // see harness.Main
	const prefix = "rr"
	const ida, idp, topic = prefix + "-a", prefix + "-pub", prefix + "/x"
	// The publisher's connection closes once the failed forward's wait
	// ends: forward_timeout. No adoption while n1 is dead: rr-a's
	// session is to stay n1's.
	const fault = "unconfirmed=" + topic + "@n3,held-empty=8s@n1"
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: fault, Config: "cluster:\n  forward_timeout: 4s\n  adopt_after: 60s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	share := paho.SubscribeOptions{Topic: "$share/rr/" + prefix + "/+", QoS: 2}
	b := harness.NewPersistent(t, n2, prefix+"-b", share)
	a := harness.NewPersistent(t, n1, ida, share)
	// m1 is held for n1 for rr-p while n1 is dead: the restarted n1's
	// restored sessions settle once its held follower read it.
	p := harness.NewPersistent(t, n1, prefix+"-p", paho.SubscribeOptions{Topic: prefix + "/#", QoS: 2})
	harness.Connect(t, n3, prefix+"-probe").AwaitInterest(t, prefix+"/probe")
	for _, c := range []*harness.Client{a, p} {
		c.Disconnect(&paho.Disconnect{})
		tc.WaitLog(n1, "client_id="+c.ID+` reason="client disconnected normally"`, 1, harness.Wait)
	}
	tc.Kill(n1, syscall.SIGKILL)
	tc.WaitLog(n3, `"cluster node gone: no route" node=n3 peer=n1`, 1, 15*time.Second)

	// Refused (0x80) while the partition streams elect leaders after
	// the kill.
	var pc *mqtttest.Client
	harness.Eventually(t, 30*time.Second, func() (err error) {
		pc, _, err = harness.RawPublisher(t, n3, idp, true)
		return err
	})
	pub := &packet.Publish{QoS: 2, PacketID: 9, Topic: topic, Payload: []byte("m1")}
	if rc, closed := harness.ExchangeQoS2(t, pc, pub); !closed {
		t.Fatalf("PUBLISH answered PUBREC 0x%02X, want the connection closed (outcome unknown)", byte(rc))
	}
	// Served by n2, which claims it for rr-b once rr-b's copy is durable.
	const served = `"cluster: share groups of a first routing claimed" node=n2 client_id=` + idp
	awaitLogs(n2, 10*time.Second, 1, served)
	if harness.CountLog(n2, served) == 0 {
		t.Skipf("n2 claimed no group for m1 (its copy for %s-b was not durable): the test missed its path\nn2:\n%s\nn3:\n%s", prefix,
			harness.GrepLog(n2, prefix+"-", "share group"), harness.GrepLog(n3, prefix+"-", "share group"))
	}

	// Back, n1 reads its held subject empty for a while (held-empty):
	// rr-a's restored copy stays unsettled, an away copy, while the
	// owner records are read and the publisher's session can move in.
	tc.Start(n1)
	tc.WaitLog(n1, `"cluster: owners of restored sessions read"`, 1, 30*time.Second)
	harness.Eventually(t, 30*time.Second, func() error {
		c, ack, err := harness.RawPublisher(t, n1, idp, false)
		if err != nil {
			return err
		}
		if !ack.SessionPresent {
			t.Fatalf("%s on n1: Session Present 0", idp)
		}
		pc = c
		return nil
	})
	resend := *pub
	resend.Dup = true
	if _, closed := harness.ExchangeQoS2(t, pc, &resend); closed {
		harness.ResendUntilAcknowledged(t, n1, idp, pub)
	}
	// Kept for the restored copies it reached: rr-p's (plain) and, by
	// the group, rr-a's.
	// Or, with rr-b live on n2, the group served there (passon.go,
	// broker.GroupPasser: seed 838's change), where its claim finds
	// rr-b's own.
	const keptLine, left = `"cluster: message for a disowned copy kept in the held subject" node=n1 clients=`,
		`"share group of a QoS 2 resend left out: another copy claimed it" client_id=` + idp
	const passed = `"cluster: share groups whose members here are restored sessions only left to a node with a member" node=n1 topic=` + topic
	kept := harness.CountLog(n1, keptLine+`"[rr-p rr-a]"`) + harness.CountLog(n1, keptLine+`"[rr-a rr-p]"`)
	if kept+harness.CountLog(n1, left)+harness.CountLog(n1, passed) == 0 {
		t.Skipf("the resend on n1 neither went to %s's restored copy nor was left out nor served elsewhere: the test missed its path\nn1:\n%s",
			ida, harness.GrepLog(n1, prefix+"-", "restored", "owner records"))
	}
	back := harness.Resume(t, n1, ida, harness.QueuedExpiry, 60*time.Second)
	got := copiesOfM1(t, back, b)
	t.Logf("path: the resend kept for %s's restored copy %d, left out %d, served elsewhere %d", ida, kept, harness.CountLog(n1, left), harness.CountLog(n1, passed))
	if n := got["a"] + got["b"]; n != 1 {
		t.Fatalf("group rr got the acknowledged QoS 2 message %d times (%v), want once\nn1:\n%s\nn3:\n%s", n, got,
			harness.GrepLog(n1, prefix+"-", "share group", "restored"), harness.GrepLog(n3, prefix+"-", "share group"))
	}
}
