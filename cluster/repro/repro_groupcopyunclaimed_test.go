package repro_test

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestReproGroupCopyUnclaimedRead: clean publishers' QoS 2 messages (no
// Origin: named by their copy) forwarded from n1 to n3, where share group
// cu's members are offline, are queued durably for them, and the group
// claims of those given to cu-a are not made (fault served-unclaimed: n3
// dying between the copy and the claim); n3 never confirms the forwards
// (confirm-late) and is killed, so n1 holds them for n3 with the group.
// cu-b resumes on n1 and its read of n3's held subject claims the group
// for it and delivers them; then cu-a resumes on n2 from the stream, its
// record's queue holding the same messages. Before, the adoption claimed
// only deliveries under an Origin, and cu-a got them too: two members
// (test/jepsen TestClusterFull short faults, seed 215: pub2#291 queued
// for g0m1 on n1 1 ms before n1's kill, given to g0m0 by the restarted
// n1's reader and to g0m1 from its record on n3; seed 217 the same with a
// live move; bench/jepsen/RESULTS.md, t231).
func TestReproGroupCopyUnclaimedRead(t *testing.T) {
	t.Parallel() // see harness.Main
	copyUnclaimed(t, "cu", false)
}

// TestReproGroupCopyUnclaimedMoved: TestReproGroupCopyUnclaimedRead with
// seed 217's way and order: cu-a resumes on n2 first, a live move from
// n3 with the unclaimed copies in its queue, then n3 is killed and cu-b
// resumes on n1, reading n3's held subject: the adoption's claims are
// there first, and the reader must leave those messages.
func TestReproGroupCopyUnclaimedMoved(t *testing.T) {
	t.Parallel() // see harness.Main
	copyUnclaimed(t, "cm", true)
}

// copyUnclaimed runs the scenario with PREFIX's names; moved has
// PREFIX-a move live before n3's kill (else it is read from the stream
// after cu-b's read).
func copyUnclaimed(t *testing.T, prefix string, moved bool) {
	const n = 10
	topic := prefix + "/q"
	ida, idb := prefix+"-a", prefix+"-b"
	// No adoption by the janitor: the sessions move by the clients'
	// claims only. The forwards wait for n3 past its kill.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "confirm-late=" + topic + "@n3,served-unclaimed=" + ida + "@n3", Config: "cluster:\n  adopt_after: 60s\n  forward_timeout: 20s\nlimits:\n  max_queued: 100000\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	for _, id := range []string{ida, idb} {
		c := newMember(t, n3, id, paho.SubscribeOptions{Topic: "$share/" + prefix + "/" + topic, QoS: 2},
			paho.SubscribeOptions{Topic: "$share/" + prefix + "/" + prefix + "/probe", QoS: 1},
			paho.SubscribeOptions{Topic: prefix + "/end/" + id, QoS: 2})
		if err := c.Disconnect(&paho.Disconnect{}); err != nil {
			t.Fatalf("disconnect %s: %v", id, err)
		}
		tc.WaitLog(n3, "client_id="+id+` reason="client disconnected normally"`, 1, harness.Wait)
	}
	pubs := make([]*harness.Client, n)
	for i := range pubs {
		pubs[i] = harness.Connect(t, n1, fmt.Sprintf("%s-pub%d", prefix, i))
	}
	pubs[0].AwaitInterest(t, prefix+"/probe")
	wait := publishQoS2(t, pubs, topic)

	// n3 queues them for the offline members; cu-b's are claimed, cu-a's
	// not (the fault's line comes once such a copy is durable).
	const left = `"cluster: test fault: a first routing's share group claims left out" node=n3`
	awaitLogs(n3, 20*time.Second, 1, left)
	if harness.CountLog(n3, left) == 0 {
		tc.Kill(n3, syscall.SIGKILL)
		t.Skipf("n3 gave %s none of the messages durably: the test missed its path", ida)
	}
	awaitLogs(n3, 10*time.Second, 1, `"cluster: share groups of a first routing claimed" node=n3`)
	got := map[string]int{} // by payload, over the group
	if moved {
		movedIn(t, n2, ida, got)
	}
	tc.Kill(n3, syscall.SIGKILL)
	acked, unknown := wait()
	t.Logf("%d acknowledged, %d with unknown outcome", len(acked), unknown)

	// cu-b's read of n3's held subject claims the group, before the
	// adoption of cu-a's queued copies or after it.
	b := harness.Resume(t, n1, idb, harness.QueuedExpiry, time.Minute)
	servedEnd(t, n1, b, prefix, idb, true, func(s string) { got[s]++ })
	a := harness.Resume(t, n2, ida, harness.QueuedExpiry, time.Minute)
	// Moved live to n2 before the kill, cu-a resumes there without a
	// claim, so nothing catches up; a second claim on n2 (its session
	// taken from the stream after all) does.
	claims := harness.CountLog(n2, `"client id claimed from another node" node=n2 client_id=`+ida+" ")
	servedEnd(t, n2, a, prefix, ida, !moved || claims > 1, func(s string) { got[s]++ })
	read := heldReadFor(n1, idb, "n3")
	t.Logf("group's copies: %v; held messages read for %s from n3's held subject: %d", got, idb, read)
	for i := range n {
		if m := fmt.Sprintf("m-%d", i); got[m] > 1 {
			t.Errorf("group %s got QoS 2 message %s %d times, want once", prefix, m, got[m])
		}
	}
	for _, m := range acked {
		if got[m] == 0 {
			t.Errorf("acknowledged message %s lost for the group", m)
		}
	}
	if t.Failed() {
		t.Fatalf("n1:\n%s\nn2:\n%s", harness.GrepLog(n1, "client_id="+idb), harness.GrepLog(n2, "client_id="+ida))
	}
	if moved {
		claimed := harness.CountLog(n2, `"cluster: queued share group copies claimed at the adoption" node=n2 client_id=`+ida)
		if claimed == 0 || read == 0 || harness.CountLog(n2, `"session moved here" node=n2 client_id=`+ida+` from=n3`) == 0 {
			t.Skipf("once each (%v), but %s's live move claimed %d times, %d held messages read for %s: the test missed its path",
				got, ida, claimed, read, idb)
		}
		return
	}
	dropped := harness.CountLog(n2, `"cluster: a queued share group copy dropped at its adoption: the group was claimed for another member" node=n2 client_id=`+ida)
	if dropped == 0 || read == 0 {
		t.Skipf("once each (%v), but %s's adoption dropped %d copies, %d held messages read for %s: the test missed its path",
			got, ida, dropped, read, idb)
	}
	if !strings.Contains(harness.GrepLog(n2, `"session moved here" node=n2 client_id=`+ida), `from="replicated record"`) {
		t.Skipf("once each (%v), but %s was not read from the stream: the test missed its path", got, ida)
	}
}

// movedIn resumes id on nd, a live move, counts into got the queued
// copies the move carried (its "messages=" count) once the client
// completed each, and disconnects: n3's kill next may leave nd's store
// without a quorum for a while, and nd closes the connection.
func movedIn(t *testing.T, nd *harness.Node, id string, got map[string]int) {
	t.Helper()
	c := harness.Resume(t, nd, id, harness.QueuedExpiry, time.Minute)
	var carried int
	l := harness.GrepLog(nd, `"session moved here" node=`+nd.Name+" client_id="+id+" ")
	if i := strings.Index(l, " messages="); i >= 0 {
		fmt.Sscanf(l[i+len(" messages="):], "%d", &carried)
	}
	for k, deadline := 0, time.After(30*time.Second); k < carried; {
		select {
		case p := <-c.In:
			if s := string(p.Payload); strings.HasPrefix(s, "m-") {
				got[s]++
				k++
			}
		case <-deadline:
			t.Fatalf("%s on %s: %d of the %d messages its move carried within 30 s", id, nd.Name, k, carried)
		}
	}
	awaitLogs(nd, 20*time.Second, carried, "type=PUBCOMP", "client_id="+id)
	if err := c.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatalf("disconnect %s: %v", id, err)
	}
	harness.DrainInbox(c, func(p *paho.Publish) {
		if s := string(p.Payload); strings.HasPrefix(s, "m-") {
			got[s]++
		}
	})
}
