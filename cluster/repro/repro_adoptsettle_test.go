package repro_test

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestReproAdoptedBeforeSettle: a restarted node drops its restored copy
// of a session another node owns now, and adopts that session again (its
// owner went silent: the janitor) before it settled. The session here is
// then the adoption's, read from the stream, its interest out by
// persistent keys: publishers forward to this node what it matches and
// hold nothing for it. It was taken for the restored copy all the same
// (restoredGate.unsettled named every id the store had restored until the
// settle): each forward left it out (skipUnsettled) and was confirmed, and
// a claim from elsewhere ended it and read the stream, where those
// messages never were (TestReproOpOrderRollup in CI: n1 adopted oo-sub
// from the killed n3 4 s before its settle, n2 published 6 messages to it
// in between, acknowledged and lost).
//
// Here S's session is on n1; n1 dies, A (the janitor's adopter of S among
// n2 and n3) adopts it, n1 comes back with held-empty (its reads of what
// was held for it come back empty, as after its restart while a stream
// elected a leader: it stays unsettled) and drops its copy; A dies, and n1
// is S's adopter among the live nodes. The third node O publishes to S
// from n1's adoption on, until 20 of its rounds went to n1 (O held nothing
// for A), then S resumes on O: every acknowledged message must reach it.
// A second session of n1, K, with a topic of its own, gets messages held
// for n1 while it is dead, so that n1 has something to settle (with
// nothing held for it, it settles at once).
func TestReproAdoptedBeforeSettle(t *testing.T) {
	t.Parallel() // see harness.Main
	prefix, adopter, other := adoptSettleNames()
	id := prefix + "-sub"
	// The subscriber reads nothing until it resumes: its queue takes
	// everything published meanwhile.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Config: "cluster:\n  adopt_after: 2s\nlimits:\n  max_queued: 100000\n"})
	byName := map[string]*harness.Node{}
	for _, nd := range tc.Nodes {
		byName[nd.Name] = nd
	}
	n1, ad, ot := tc.Nodes[0], byName[adopter], byName[other]
	_, pub := harness.PersistentPair(t, n1, ot, prefix, 600)
	keepTopic := prefix + "/k"
	harness.NewPersistent(t, n1, prefix+"-keep", paho.SubscribeOptions{Topic: keepTopic, QoS: 1})
	pub.AwaitInterest(t, keepTopic)
	pp := &pacedPub{t: t, nd: ot, id: prefix + "-pub", prefix: prefix, pub: pub}

	tc.Kill(n1, syscall.SIGKILL)
	// Held for n1 (K's filter): n1's follower has them to apply at its
	// restart, and held-empty keeps it from getting there.
	for i, held, start := 0, 0, time.Now(); held < 5; i++ {
		if time.Since(start) > 60*time.Second {
			t.Fatalf("only %d messages for %s acknowledged in 60 s with n1 dead", held, keepTopic)
		}
		rc, closed := pp.pub.TryPublish(t, &paho.Publish{Topic: keepTopic, QoS: 1, Payload: []byte(fmt.Sprintf("k-%d", i))})
		switch {
		case closed:
			harness.Eventually(t, 30*time.Second, func() error { return harness.Redial(t, ot, pp.id, &pp.pub) })
		case rc < 0x80:
			held++
		}
	}
	adopted := `"session of a silent node adopted" node=%s client_id=` + id
	tc.WaitLog(ad, fmt.Sprintf(adopted, adopter), 1, 60*time.Second)

	n1.Env = append(n1.Env, "ROOST_TEST_FAULT=held-empty=45s@n1")
	restored := harness.WatchRestored(n1, id)
	tc.Start(n1)
	restored.Wait(t, 60*time.Second, nil) // dropped, or fenced first (harness.RestoredCopy)
	tc.Kill(ad, syscall.SIGKILL)
	tc.WaitLog(n1, fmt.Sprintf(adopted, "n1"), 1, 60*time.Second)
	const settled = "restored sessions settled"
	if harness.CountLog(n1, settled) > 0 {
		t.Skipf("n1 settled before it adopted %s: the test missed its path; n1:\n%s", id, harness.GrepLog(n1, "client_id="+id, settled))
	}
	// O holds for the dead adopter (its orphan interest) until it sees
	// the adoption's interest on n1, and forwards to n1 from then on: a
	// round of the publisher's that O held nothing for went there.
	held := func() int { return harness.CountLog(ot, "node="+other+" peer="+adopter+" topic="+prefix+"/q") }
	for forwarded, start := 0, time.Now(); forwarded < 20; {
		if harness.CountLog(n1, settled) > 0 {
			if forwarded == 0 {
				t.Skipf("n1 settled before %s forwarded to %s there: the test missed its path; n1:\n%s", other, id, harness.GrepLog(n1, "client_id="+id, settled))
			}
			break
		}
		if time.Since(start) > 40*time.Second {
			t.Skipf("%s did not forward to %s on n1 within 40 s of its adoption: the test missed its path; %s:\n%s", other, id, other, harness.GrepLog(ot, "client_id="+id, "cluster:"))
		}
		before := held()
		pp.publish()
		if held() == before {
			forwarded++
		}
	}
	c := pp.resume(ot, id)
	pp.check(c, n1, ot)
}

// adoptSettleNames picks a prefix whose subscriber PREFIX-sub the
// janitor gives to adopter among n2 and n3 (other: the third node), and
// to n1 among n1 and other (adopterName): n1's adoption of it follows
// adopter's death.
func adoptSettleNames() (prefix, adopter, other string) {
	for k := 0; ; k++ {
		prefix = fmt.Sprintf("as%d", k)
		id := prefix + "-sub"
		adopter = adopterName(id, "n2", "n3")
		other = map[string]string{"n2": "n3", "n3": "n2"}[adopter]
		if adopterName(id, "n1", other) == "n1" {
			return prefix, adopter, other
		}
	}
}
