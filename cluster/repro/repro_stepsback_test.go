package repro_test

import (
	"fmt"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/internal/rawclient"
)

// TestReproQoS2StepsClaimedBack: test/jepsen TestClusterFull seed 49
// (bench/jepsen/RESULTS.md, "dup49"): ps2's session on n1 was disowned
// for n3's claim (the fence, 10:44:12.553), and the taken-over
// connection's last read applied a PUBREC and 27 PUBCOMPs after the
// disown: ops kept in n1's own store only, but in the session n1 handed
// over (rec1, 12.574). The client came back to n1, which claimed the id
// back and declined n3's finish; n3 took the session from its partition
// stream, which had none of those steps, and handed that over to n1: its
// resumed client got 27 PUBRELs again and pub1#302 again as a PUBLISH,
// after it had completed that exchange.
//
// Here the session is on n2 with m1..m5 in flight (the client holds its
// PUBRECs back). A CONNECT on n3 claims the id; n2 disowns its copy and
// takes the connection over only stepsLate later (steps-late), while the
// client completes m1..m4 there and sends m5's PUBREC (n2's PUBREL is
// not read); n3's move asks n2 to finish only once a newer claim asked n3
// to let go (finish-asked), and the client resumes on n2. Each QoS 2
// message must come once, m5 never again as a PUBLISH [MQTT-4.3.3-6]
// (its PUBREL may come again), and one published after them too.
func TestReproQoS2StepsClaimedBack(t *testing.T) {
	t.Parallel() // see harness_test.go
	const id = "sb-sub"
	qos2StepsBack(t, id, "sb/t", "finish-asked="+id+"@n3", "the move's finish waits for a newer claim", false, func(tc *harness.Cluster) error {
		n3 := tc.Nodes[2]
		if harness.CountLog(n3, `"cluster: moving session: the previous owner did not finish; taking what it handed over first" node=n3 client_id=`+id) == 0 {
			return fmt.Errorf("n2 finished n3's move: the test missed the claim back it is about; n3:\n%s", harness.GrepLog(n3, "client_id="+id))
		}
		return nil
	})
}

// TestReproQoS2StepsReadBack: TestReproQoS2StepsClaimedBack's claim back,
// answered "read the stream": n3's move in is not adopted when n2's claim
// asks it to let go, and its answer's wait for the move is cut at its
// bound (move-cut), as for a move waiting for a barrier of a node cut off
// or killed (or an answer that never comes: releaseTimeout). n2 takes the
// session from its partition stream, which has none of the steps its
// disowned copy took from the client (bench/jepsen/RESULTS.md, "dup49",
// what is left 1; "dup49b"): before, the client got m1..m4 twice and m5's
// PUBLISH again.
func TestReproQoS2StepsReadBack(t *testing.T) {
	t.Parallel() // see harness_test.go
	const id = "sr-sub"
	qos2StepsBack(t, id, "sr/t", "move-cut="+id+"@n3", "the move's finish waits until a newer claim was answered", false, func(tc *harness.Cluster) error {
		n2 := tc.Nodes[1]
		if harness.CountLog(n2, `"session moved here" node=n2 client_id=`+id+` from="replicated record"`) == 0 {
			return fmt.Errorf("n2 did not take %s from the stream: the test missed the claim back it is about; n2:\n%s", id, harness.GrepLog(n2, "client_id="+id))
		}
		return nil
	})
}

// qos2StepsBack runs the steps-late claim back of the tests above: faults
// (on n3: what keeps its move in from finishing, whose log line says
// wait) besides steps-late on n2; path reports whether the claim back
// went the way the test is about.
func qos2StepsBack(t *testing.T, id, topic, faults, wait string, kept bool, path func(*harness.Cluster) error) {
	t.Helper()
	tc, sub, pub := startQoS2OnN2(t, id, topic, faults+",steps-late="+id+"@n2")
	n2, n3 := tc.Nodes[1], tc.Nodes[2]
	var want []string
	publish := func(m string) {
		t.Helper()
		if rc := pub.Pub(t, &paho.Publish{Topic: topic, QoS: 2, Payload: []byte(m)}); rc >= 0x80 {
			t.Fatalf("%s: 0x%02X", m, rc)
		}
		want = append(want, m)
	}
	for i := 1; i <= 5; i++ {
		publish(fmt.Sprintf("m%d", i))
	}
	// m1..m5 in flight on n2, their PUBRECs held back.
	var held []rawclient.Packet
	for deadline := time.Now().Add(30 * time.Second); len(held) < 5; {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d of m1..m5 delivered on n2 within 30 s", id, len(held))
		}
		p, err := sub.conn.ReadPacket(time.Second)
		if err != nil {
			continue
		}
		if p.Type == rawclient.PUBLISH {
			m, err := rawclient.ParsePublish(5, p.Flags, p.Body)
			if err == nil && strings.HasPrefix(string(m.Payload), "m") {
				held = append(held, p)
				continue
			}
		}
		sub.handle(p) // the interest probes
	}

	// n3 claims the id; n2 disowns its copy and leaves the connection to
	// its client for stepsLate.
	claimOn(t, tc, n3, id, harness.QueuedExpiry)
	late := `"cluster: test fault: the connection of a session disowned here is taken over late" node=n2 client_id=` + id
	for start := time.Now(); harness.CountLog(n2, late) == 0; time.Sleep(5 * time.Millisecond) {
		if time.Since(start) > 30*time.Second {
			t.Fatalf("n2 did not disown %s within 30 s; n2:\n%s", id, harness.GrepLog(n2, "client_id="+id))
		}
	}
	// The client completes m1..m4 on the disowned copy (PUBREC, PUBREL,
	// PUBCOMP) and sends m5's PUBREC; a PINGREQ's PINGRESP then says n2
	// read them all. m5's PUBREL is left unread, as by a client whose
	// connection ended before it came.
	for _, p := range held[:4] {
		sub.handle(p)
	}
	completed := func() bool {
		for _, m := range want {
			if !sub.completed[m] {
				return false
			}
		}
		return true
	}
	first := func() bool {
		return sub.completed["m1"] && sub.completed["m2"] && sub.completed["m3"] && sub.completed["m4"]
	}
	if err := sub.read(time.Now().Add(10*time.Second), first); err != nil {
		t.Fatalf("%s: m1..m4 not completed on n2 before its takeover (%v): the test missed the window it is about", id, err)
	}
	if kept {
		keptSteps(t, sub, publish)
	}
	sub.handle(held[4])
	if err := sub.conn.Write(rawclient.Frame(0xC0), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	for pong := false; !pong; {
		p, err := sub.conn.ReadPacket(5 * time.Second)
		if err != nil {
			t.Fatalf("%s: no PINGRESP from n2 before its takeover (%v): the test missed the window it is about", id, err)
		}
		pong = p.Type == rawclient.PINGRESP
	}
	if harness.CountLog(n2, "client_id="+id+` reason="session taken over by a new connection"`) > 0 {
		t.Fatalf("n2 took %s's connection over before the client's steps were read: the test missed the window it is about", id)
	}

	// n3's move waits before its finish. (A publish now would wait for
	// its end: n3 holds what comes after its barriers until it adopts.)
	tc.WaitLog(n3, `"cluster: test fault: `+wait+`" node=n3 client_id=`+id, 1, 60*time.Second)

	// The client claims the id back on n2.
	harness.Eventually(t, 60*time.Second, func() error {
		present, err := sub.connect(n2, false)
		if err == nil && !present {
			t.Fatalf("%s: back on n2 without its session", id)
		}
		return err
	})
	sub.resumed(n2, 30*time.Second, completed)
	// A last message: whatever the session sent again came before it.
	publish("m6")
	sub.resumed(n2, 30*time.Second, completed)
	if err := path(tc); err != nil {
		t.Fatal(err)
	}
	for _, m := range want {
		if sub.got[m] != 1 {
			t.Errorf("%s got %s %d times at QoS 2, want once", id, m, sub.got[m])
		}
	}
	if kept && sub.publishes["k2"] != 1 {
		t.Errorf("%s got k2's PUBLISH %d times: sent again after its PUBREC [MQTT-4.3.3-6]", id, sub.publishes["k2"])
	}
	if sub.publishes["m5"] != 1 {
		t.Errorf("%s got m5's PUBLISH %d times: sent again after its PUBREC and PUBREL [MQTT-4.3.3-6]", id, sub.publishes["m5"])
	}
	if t.Failed() {
		t.Logf("got %v, PUBLISHes %v\nn2:\n%s\nn3:\n%s", sub.got, sub.publishes, harness.GrepLog(n2, "client_id="+id), harness.GrepLog(n3, "client_id="+id))
	}
}

// TestReproQoS2KeptStepsReadBack is TestReproQoS2StepsReadBack with two
// messages published after n2's disown: its copy takes them (kept in
// n2's held subject for the session, keep.go) and sends them to the
// client, which completes k1 and PUBRECs k2 there. The claim back reads
// the stream, which has neither, and its own held subject, which has
// both: each must come once, and k2 as its PUBREL only.
func TestReproQoS2KeptStepsReadBack(t *testing.T) {
	t.Parallel() // see harness_test.go
	const id = "sk-sub"
	qos2StepsBack(t, id, "sk/t", "move-cut="+id+"@n3", "the move's finish waits until a newer claim was answered", true, func(tc *harness.Cluster) error {
		n2 := tc.Nodes[1]
		if harness.CountLog(n2, `"session moved here" node=n2 client_id=`+id+` from="replicated record"`) == 0 {
			return fmt.Errorf("n2 did not take %s from the stream: the test missed the claim back it is about; n2:\n%s", id, harness.GrepLog(n2, "client_id="+id))
		}
		return nil
	})
}

// keptSteps publishes k1 and k2 to the disowned copy's client, which
// completes k1 and sends k2's PUBREC, leaving its PUBREL unread.
func keptSteps(t *testing.T, sub *qos2Sub, publish func(string)) {
	t.Helper()
	publish("k1")
	publish("k2")
	k2 := false
	for deadline := time.Now().Add(10 * time.Second); !sub.completed["k1"] || !k2; {
		if time.Now().After(deadline) {
			t.Fatalf("%s: k1 not completed or k2 not sent on n2 before its takeover: the test missed the window it is about", sub.id)
		}
		p, err := sub.conn.ReadPacket(time.Second)
		if err != nil {
			continue
		}
		if p.Type == rawclient.PUBREL {
			if a, err := rawclient.ParseAck(5, p.Body); err == nil && sub.awaiting[a.ID] == "k2" {
				continue // left unread
			}
		}
		if p.Type == rawclient.PUBLISH {
			if m, err := rawclient.ParsePublish(5, p.Flags, p.Body); err == nil && string(m.Payload) == "k2" {
				k2 = true
			}
		}
		sub.handle(p)
	}
}
