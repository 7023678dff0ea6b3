package repro_test

import (
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestReproUnsureWillClaim: TestClusterDeadNodeCleanWills at load 60-95
// (issue 17, /work/runs/suitetime-deadnodecleanwills) lost cw-gone's will.
// n1 was killed; n2's janitor claimed cw-gone's record (the will rides in
// it, cleanwill.go), and the write's acknowledgement did not come in time
// ("context deadline exceeded"), but it applied: the record named n2, no
// will in it, and the next scans found nothing to adopt. No node
// published the will.
//
// claim-unconfirmed makes the survivor's first claim of uw-gone's record
// end that way (written, then an error): the survivor must learn from the
// record that its write applied and publish the will, once.
func TestReproUnsureWillClaim(t *testing.T) {
	t.Parallel() // see harness.Main
	const id = "uw-gone"
	// Either survivor may be the adopter (adopterOf): both have the
	// fault.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "claim-unconfirmed=" + id + "@n2,claim-unconfirmed=" + id + "@n3", Config: "cluster:\n  adopt_after: 5s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	wills := harness.Connect(t, n2, "uw-wills")
	wills.Sub(t, paho.SubscribeOptions{Topic: "uw/will", QoS: 1})
	harness.Connect(t, n1, "uw-probe").AwaitInterest(t, "uw/will")
	if _, ack := harness.ConnectWith(t, n1, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
		WillMessage: &paho.WillMessage{Topic: "uw/will", QoS: 1, Payload: []byte(id)}}); ack.ReasonCode != 0 {
		t.Fatalf("%s: CONNACK 0x%02X", id, ack.ReasonCode)
	}

	tc.Kill(n1, syscall.SIGKILL)
	// adopt_after (5 s), the scan, the unconfirmed claim, the janitor's
	// next tick: seconds; 90 s for a loaded machine.
	deadline := time.After(90 * time.Second)
	for got := false; !got; {
		select {
		case p := <-wills.In:
			if string(p.Payload) == id {
				got = true
			}
		case <-deadline:
			t.Fatalf("%s's will not published within 90 s of n1's kill; n2 and n3 say:\n%s\n%s", id,
				harness.GrepLog(n2, "will", "silent", id), harness.GrepLog(n3, "will", "silent", id))
		}
	}
	wills.None(t, 3*time.Second)
	unconfirmed := `claim not confirmed (claim-unconfirmed)`
	if harness.CountLog(n2, unconfirmed)+harness.CountLog(n3, unconfirmed) == 0 {
		t.Errorf("no survivor's claim of %s went through the fault: the test missed its case; n2 and n3 say:\n%s\n%s", id,
			harness.GrepLog(n2, "will", "silent", id), harness.GrepLog(n3, "will", "silent", id))
	}
}
