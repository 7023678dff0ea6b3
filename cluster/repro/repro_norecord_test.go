package repro_test

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestReproOwnerRestartedWithout: a session whose owner record names a
// node that restarted without it (bench/jepsen/RESULTS.md "own194", What
// is left 3, and "norec"). A claim writes the owner record when it reads
// the session from the stream, and the session reaches the node's store
// only at the adoption: a node killed between the two restarts with a
// record naming it and a store without the session. It restores nothing
// for the id, so it puts out no interest and no hold keys for it; the
// other nodes' cover for it (the dead node's orphan interest, a dropped
// copy's keys) ends; from then on every QoS 1/2 message for the session
// is acknowledged and held for nobody, until a claim reads the stream.
//
// Here nr-sub (a plain filter, so that no share group plays a part) is
// offline on n3; n3 is killed; the client connects to n2, whose claim
// reads the session and waits (adopt-late); n3 comes back and drops its
// restored copy; n2 is killed in its wait and started again without the
// session. Once probes on n1 are held for neither n2 nor n3, a paced
// publisher on n1 sends QoS 1 and 2 messages, and then the client takes
// its session on n3. Every acknowledged message must reach it, a QoS 2
// one once.
func TestReproOwnerRestartedWithout(t *testing.T) {
	t.Parallel() // see harness.Main
	const (
		prefix = "nr"
		id     = prefix + "-sub"
	)
	// No survivor adopts the killed nodes' sessions: nr-sub is taken by
	// its client's claims only.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "adopt-late=" + id + "@n2", Config: "cluster:\n  adopt_after: 300s\n  forward_timeout: 5s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	sub := harness.NewPersistent(t, n3, id, paho.SubscribeOptions{Topic: prefix + "/#", QoS: 2})
	if err := sub.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatalf("disconnect %s: %v", id, err)
	}
	tc.WaitLog(n3, "client_id="+id+` reason="client disconnected normally"`, 1, harness.Wait)
	pub := harness.Connect(t, n1, prefix+"-pub")
	pub.AwaitInterest(t, prefix+"/t")

	restartWithout(t, tc, n3, n2, id)
	// Until neither n2 (dead: its claim's keys, its orphan interest) nor
	// n3 (its dropped copy's keys, for cover) is held for.
	awaitUnheld(t, n1, &pub, prefix, n2, n3)

	// n2's start-up adoption of the session (adoptLeftHere) runs once its
	// session streams are ready, seconds after it serves: a message
	// published before it is the gap left (bench/jepsen/RESULTS.md
	// "norec", What is left 1), which this test does not cover. The
	// adoption is waited for with a bound, not required: without it every
	// message below is lost, and the check says so.
	const leftAdopted = `msg="cluster: sessions whose records name this node, not restored here, handled" node=n2`
	for end := time.Now().Add(60 * time.Second); harness.CountLog(n2, leftAdopted) == 0 && time.Now().Before(end); {
		time.Sleep(100 * time.Millisecond)
	}

	acked, unknown := harness.PublishPaced(t, n1, &pub, prefix+"-pub", prefix+"/t", func(i int) bool { return i < 100 })
	t.Logf("%d messages acknowledged on n1 after n2's restart, %d with unknown outcome", len(acked), unknown)

	back := harness.Resume(t, n3, id, harness.QueuedExpiry, 60*time.Second)
	got, lost := harness.ReceiveAll(back, acked, 30*time.Second)
	harness.DrainInbox(back, func(p *paho.Publish) { got[string(p.Payload)]++ })
	if len(lost) > 0 {
		t.Errorf("%d of %d acknowledged messages published on n1 after n2 restarted without %s never reached it: %v\nn2:\n%s\nn3:\n%s",
			len(lost), len(acked), id, lost[:min(len(lost), 20)], harness.GrepLog(n2, "client_id="+id), harness.GrepLog(n3, "client_id="+id))
	}
	harness.CheckQoS2Once(t, got)
}

// restartWithout leaves id's owner record naming claimer while claimer's
// store lacks the session: id, offline on owner, is claimed on claimer
// once owner is killed; claimer's adoption is held (adopt-late on
// claimer) and claimer is killed in it once owner, back, dropped its
// restored copy; claimer is started again and caught up. It returns when
// owner dropped its copy (its hold keys' cover runs from then).
func restartWithout(t *testing.T, tc *harness.Cluster, owner, claimer *harness.Node, id string) (dropped time.Time) {
	t.Helper()
	tc.Kill(owner, syscall.SIGKILL)
	held := `test fault: adoption held until the client id is claimed again elsewhere" node=` + claimer.Name + " client_id=" + id
	claimUntil(t, claimer, id, harness.QueuedExpiry, 120*time.Second, func() bool { return harness.CountLog(claimer, held) > 0 })
	restored := harness.WatchRestored(owner, id)
	tc.Start(owner)
	restored.Wait(t, 60*time.Second, nil) // dropped, or fenced before the owners read: its hold keys kept either way
	dropped = time.Now()
	tc.Kill(claimer, syscall.SIGKILL)
	caughtUp := `msg="cluster interest caught up" node=` + claimer.Name
	before := harness.CountLog(claimer, caughtUp)
	tc.Start(claimer)
	tc.WaitLog(claimer, caughtUp, before+1, 60*time.Second)
	return dropped
}

// awaitUnheld publishes QoS 1 probes on prefix/probe through *pub (on
// nd) until one is held for none of others: their hold keys and orphan
// interest (a dead node's, a dropped copy's cover) are over.
func awaitUnheld(t *testing.T, nd *harness.Node, pub **harness.Client, prefix string, others ...*harness.Node) {
	t.Helper()
	heldFor := func() int {
		n := 0
		for _, o := range others {
			n += harness.CountLog(nd, "node="+nd.Name+" peer="+o.Name+" topic="+prefix+"/probe")
		}
		return n
	}
	harness.Eventually(t, 90*time.Second, func() error {
		before := heldFor()
		if rc, closed := (*pub).TryPublish(t, &paho.Publish{Topic: prefix + "/probe", QoS: 1, Payload: []byte("probe")}); closed || rc >= 0x80 {
			harness.Redial(t, nd, prefix+"-pub", pub)
			return fmt.Errorf("probe not acknowledged (closed %v, 0x%02X)", closed, rc)
		}
		if heldFor() > before {
			time.Sleep(200 * time.Millisecond)
			return fmt.Errorf("a probe on %s was still held for another node", nd.Name)
		}
		return nil
	})
}
