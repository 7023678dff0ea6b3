package repro_test

import (
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// TestReproResendHeldMoveIn: QoS 2 m1's first routing on n3 gives share
// group rv to its member there, rv-b, and claims it for rv-b; the
// forward to a plain subscriber on n1 is not confirmed (fault
// unconfirmed), so the publisher is not answered. It resumes on n2 and
// sends m1 again while rv's other member, rv-a, moves live from n1 to n2
// (its finish slowed: finish-slow), so rv has no member in n2's server,
// only the session moving in. Before, n2 held the resend for the move and
// the adoption gave it to rv-a, its claim made only after (and found
// made for rv-b): two members (test/jepsen TestClusterFull short faults,
// seeds 425 and 427; bench/jepsen/RESULTS.md, "runs25"). Now the resend
// is not confirmed while rv's members here are all moving in; sent again
// once rv-a is in, its claim finds rv claimed for rv-b and leaves it out.
func TestReproResendHeldMoveIn(t *testing.T) {
	t.Parallel() // see harness.Main
	const prefix = "rv"
	ida, topic := prefix+"-a", prefix+"/x"
	// The publisher's connection closes once the failed forward's wait
	// ends: forward_timeout.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "finish-slow=" + ida + "@n2,unconfirmed=" + topic + "@n3", Config: "cluster:\n  forward_timeout: 4s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	share := paho.SubscribeOptions{Topic: "$share/rv/" + prefix + "/+", QoS: 2}
	plain := harness.Connect(t, n1, prefix+"-plain") // a forward to n1: the fault's way
	plain.Sub(t, paho.SubscribeOptions{Topic: prefix + "/+", QoS: 2})
	harness.Connect(t, n3, prefix+"-probe").AwaitInterest(t, prefix+"/probe")
	b := harness.NewPersistent(t, n3, prefix+"-b", share)
	a := harness.NewPersistent(t, n1, ida, share)
	a.Disconnect(&paho.Disconnect{})
	tc.WaitLog(n1, "client_id="+ida+` reason="client disconnected normally"`, 1, harness.Wait)

	pc, _, err := harness.RawPublisher(t, n3, prefix+"-pub", true)
	if err != nil {
		t.Fatal(err)
	}
	pub := &packet.Publish{QoS: 2, PacketID: 9, Topic: topic, Payload: []byte("m1")}
	if rc, closed := harness.ExchangeQoS2(t, pc, pub); !closed {
		t.Fatalf("PUBLISH answered PUBREC 0x%02X, want the connection closed (outcome unknown)", byte(rc))
	}
	awaitLogs(n3, 10*time.Second, 1, `"cluster: share groups of a first routing claimed" node=n3 client_id=`+prefix+"-pub")
	if harness.CountLog(n3, `"cluster: share groups of a first routing claimed" node=n3 client_id=`+prefix+"-pub") == 0 {
		t.Skipf("n3 claimed no group for m1 (rv went elsewhere, or its copy was not durable): the test missed its path")
	}

	// The publisher is back on n2 first; rv-a's move to n2 waits before
	// its finish, and the resend comes meanwhile.
	pc, ack, err := harness.RawPublisher(t, n2, prefix+"-pub", false)
	if err != nil || !ack.SessionPresent {
		t.Fatalf("%s on n2: %v (CONNACK %+v)", prefix+"-pub", err, ack)
	}
	got := resendWhileMovingIn(t, tc, n2, n3, n2, pc, pub, prefix, b)
	held := harness.CountLog(n2, `"session moved here" node=n2 client_id=`+ida+` from=n1 subscriptions=1 messages=0 held=1`)
	refused := harness.CountLog(n2, `"cluster: a QoS 2 resend's share group has only sessions moving in here: not held for them, not confirmed"`)
	t.Logf("path: resends refused while %s moved in %d, held for its adoption %d", ida, refused, held)
	if held+refused == 0 {
		t.Skipf("group rv got it once (%v), but the resend did not come while %s moved in: the test missed its path", got, ida)
	}
}

// TestReproResendForwardedMoveIn is TestReproResendHeldMoveIn's resend
// forwarded: m1's first routing on n3 gives share group rf to rf-b, a
// clean member there, and claims it for rf-b; the forward to n1's plain
// subscriber is not confirmed, so the publisher is not answered. rf-b
// leaves (n3 has no member of rf), the publisher resumes on n3 and sends
// m1 again while rf's other member, rf-a, moves live from n1 to n2
// (finish-slow): n3 forwards the resend to n2 for rf. Before, n2's
// ClaimResend found no member of rf in its server and claimed nothing,
// the move held the resend for rf-a (liveMoves.pick), and the adoption
// gave it to rf-a unclaimed (a resend's groups are not claimed after):
// two members (bench/jepsen/RESULTS.md, runs25's "What is left" 7). Now
// n2 takes the group out and does not confirm the forward; sent again
// once rf-a is in, its claim finds rf claimed for rf-b.
func TestReproResendForwardedMoveIn(t *testing.T) {
	t.Parallel() // see harness.Main
	const prefix = "rf"
	ida, topic := prefix+"-a", prefix+"/x"
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "finish-slow=" + ida + "@n2,unconfirmed=" + topic + "@n3", Config: "cluster:\n  forward_timeout: 4s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	share := paho.SubscribeOptions{Topic: "$share/" + prefix + "/" + prefix + "/+", QoS: 2}
	plain := harness.Connect(t, n1, prefix+"-plain") // a forward to n1: the fault's way
	plain.Sub(t, paho.SubscribeOptions{Topic: prefix + "/+", QoS: 2})
	harness.Connect(t, n3, prefix+"-probe").AwaitInterest(t, prefix+"/probe")
	b := harness.Connect(t, n3, prefix+"-b")
	b.Sub(t, share)
	a := harness.NewPersistent(t, n1, ida, share)
	a.Disconnect(&paho.Disconnect{})
	tc.WaitLog(n1, "client_id="+ida+` reason="client disconnected normally"`, 1, harness.Wait)

	pc, _, err := harness.RawPublisher(t, n3, prefix+"-pub", true)
	if err != nil {
		t.Fatal(err)
	}
	pub := &packet.Publish{QoS: 2, PacketID: 9, Topic: topic, Payload: []byte("m1")}
	if rc, closed := harness.ExchangeQoS2(t, pc, pub); !closed {
		t.Fatalf("PUBLISH answered PUBREC 0x%02X, want the connection closed (outcome unknown)", byte(rc))
	}
	claimed := `"cluster: share groups of a first routing claimed" node=n3 client_id=` + prefix + "-pub"
	awaitLogs(n3, 10*time.Second, 1, claimed)
	if harness.CountLog(n3, claimed) == 0 {
		t.Skipf("n3 claimed no group for m1 (rf went elsewhere, or its copy was not durable): the test missed its path")
	}
	// rf-b leaves with m1 in hand: n3 serves rf no more, n2 (rf-a
	// moving in) does. A clean member's claim follows its delivery
	// (broker/servedgate.go), so the claimed line can come before
	// rf-b's client reads the PUBLISH; leaving then, rf-b took m1 out
	// with its session unread, the group's claim for it rightly kept
	// the resend from rf-a, and the group got it 0 times as counted
	// here (CI on main 6a7309e, under load; forced with an rf-b that
	// never reads: bench/jepsen/RESULTS.md, "rf32").
	awaitM1(t, b, n3)
	b.Disconnect(&paho.Disconnect{})
	tc.WaitLog(n3, "client_id="+prefix+`-b reason="client disconnected normally"`, 1, harness.Wait)

	pc, ack, err := harness.RawPublisher(t, n3, prefix+"-pub", false)
	if err != nil || !ack.SessionPresent {
		t.Fatalf("%s on n3: %v (CONNACK %+v)", prefix+"-pub", err, ack)
	}
	got := resendWhileMovingIn(t, tc, n2, n3, n3, pc, pub, prefix, b)
	held := harness.CountLog(n2, `"session moved here" node=n2 client_id=`+ida+` from=n1 subscriptions=1 messages=0 held=1`)
	refused := harness.CountLog(n2, `"cluster: a QoS 2 resend's share group has only sessions moving in here: not held for them, not confirmed" node=n2 client_id=`+prefix+"-pub")
	t.Logf("path: forwarded resends refused on n2 while %s moved in %d, held for its adoption %d", ida, refused, held)
	if held+refused == 0 {
		t.Skipf("group rf got it once (%v), but no forwarded resend came while %s moved in: the test missed its path", got, ida)
	}
}

// awaitM1 waits until b, connected, has m1, and puts it back in b's inbox
// for copiesOfM1 to count. n3 claimed b's share group for b, so none
// within the bound is the group's loss.
func awaitM1(t *testing.T, b *harness.Client, n3 *harness.Node) {
	t.Helper()
	deadline := time.After(harness.PublishBound)
	for {
		select {
		case p := <-b.In:
			if string(p.Payload) == "m1" { // else a probe
				b.In <- p
				return
			}
		case <-deadline:
			t.Fatalf("%s, connected, got no m1 within %v, and n3 claimed its group for it: the group lost it\nn3:\n%s",
				b.ID, harness.PublishBound, harness.GrepLog(n3, b.ID, "share group"))
		}
	}
}

// resendWhileMovingIn resumes PREFIX-a's session on n2 in the background
// and, once its move's finish waits there (finish-slow), sends pub again
// (DUP) on pc, the publisher's connection to on, until it is
// acknowledged; then it requires that share group PREFIX got pub once,
// at PREFIX-a or b, and returns the copies each got (copiesOfM1). n3's
// log is shown with n2's on a failure.
func resendWhileMovingIn(t *testing.T, tc *harness.Cluster, n2, n3, on *harness.Node, pc *mqtttest.Client, pub *packet.Publish, prefix string, b *harness.Client) map[string]int {
	t.Helper()
	ida := prefix + "-a"
	resumed := harness.ResumeInBackground(t, n2, ida, harness.QueuedExpiry)
	tc.WaitLog(n2, `"cluster: test fault: the move's finish waits" node=n2 client_id=`+ida, 1, harness.Wait)
	resend := *pub
	resend.Dup = true
	if _, closed := harness.ExchangeQoS2(t, pc, &resend); closed {
		harness.ResendUntilAcknowledged(t, on, prefix+"-pub", pub)
	}
	back, ok := <-resumed
	if !ok {
		t.Fatalf("%s never resumed on n2", ida)
	}
	got := copiesOfM1(t, back, b)
	if n := got["a"] + got["b"]; n != 1 {
		t.Fatalf("group %s got the acknowledged QoS 2 message %d times (%v), want once\nn2:\n%s\nn3:\n%s", prefix, n, got,
			harness.GrepLog(n2, prefix+"-", "share group", "moved here"), harness.GrepLog(n3, prefix+"-", "share group"))
	}
	return got
}
