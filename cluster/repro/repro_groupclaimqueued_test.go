package repro_test

import (
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"github.com/roost-mqtt/roost/internal/clustertest"
	"github.com/roost-mqtt/roost/packet"
)

// TestReproGroupClaimBeforeQueued: a QoS 2 message's first routing gives
// share group ga to its member on the publishing node n1 and claims ga
// under the message's Origin (claimServed); n1 dies before the member's
// queued copy reached its partition stream (fault stall-queue: the copy
// is never replicated) and before every node confirmed the message (fault
// unconfirmed: n3's plain subscriber's forward), so its packet id stays
// unrouted and the publisher's PUBREC never comes. The member
// resumes on n2 from the stream, without the copy, and the publisher
// sends the message again (DUP) on n2, which claims ga for its member
// there. Before, the claim went out at once, apart from the copy: n2
// found ga claimed, left it out, and nobody got the message (test/jepsen
// TestClusterFull short faults, seed 112: g1 never got pub0#167, given
// to g1m1 on n1 29 ms before n1's kill; bench/jepsen/RESULTS.md, sg112).
func TestReproGroupClaimBeforeQueued(t *testing.T) {
	t.Parallel() // see harness.Main
	beforeQueued(t, "gq", true)
}

// TestReproRoutedBeforeQueued: TestReproGroupClaimBeforeQueued with no
// other node to confirm the first routing: the publishing node marked the
// packet id routed (broker markRouted: the id's op, nonce 0) once the
// cluster confirmed, and that op reached the publisher's partition stream
// while the member's queued copy had not: the resend on n2 was answered
// PUBREC without routing, and nobody got the message (found by this
// test's first version; bench/jepsen/RESULTS.md, sg112).
func TestReproRoutedBeforeQueued(t *testing.T) {
	t.Parallel() // see harness.Main
	beforeQueued(t, "gz", false)
}

// beforeQueued runs the scenario with the client ids PREFIX-*; unconfirmed
// adds a plain subscriber on n3 whose forward is not confirmed.
func beforeQueued(t *testing.T, prefix string, unconfirmed bool) {
	id, topic := prefix+"-m1", prefix+"/x"
	// The publisher's PUBREC waits for the stalled copy: forward_timeout.
	faults := "stall-queue=" + id + "@n1"
	if unconfirmed {
		faults += ",unconfirmed=" + topic + "@n1"
	}
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: faults, Config: "cluster:\n  forward_timeout: 4s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	expiry := uint32(harness.QueuedExpiry)
	share := paho.SubscribeOptions{Topic: "$share/ga/" + prefix + "/+", QoS: 2}
	if unconfirmed {
		// Before ga has a member: a probe queued for it would stall n1.
		plain := harness.Connect(t, n3, prefix+"-plain") // a forward to n3: the fault's way
		plain.Sub(t, paho.SubscribeOptions{Topic: prefix + "/+", QoS: 2})
		harness.Connect(t, n1, prefix+"-probe").AwaitInterest(t, prefix+"/probe")
	}
	m1 := harness.NewPersistent(t, n1, id, share)
	m1.Disconnect(&paho.Disconnect{}) // ga's only member, offline on n1
	tc.WaitLog(n1, "client_id="+id+` reason="client disconnected normally"`, 1, harness.Wait)
	pc, _, err := harness.RawPublisher(t, n1, prefix+"-pub", true)
	if err != nil {
		t.Fatal(err)
	}
	pub := &packet.Publish{QoS: 2, PacketID: 7, Topic: topic, Payload: []byte("m1")}
	if rc, closed := harness.ExchangeQoS2(t, pc, pub); !closed {
		t.Fatalf("PUBLISH answered PUBREC 0x%02X, want the connection closed (outcome unknown)", byte(rc))
	}
	if harness.CountLog(n1, `"cluster: test fault: a session op kept from its partition stream" node=n1 client_id=`+id) == 0 {
		t.Fatalf("n1 queued nothing for %s: the test missed its path\nn1:\n%s", id, harness.GrepLog(n1, prefix+"-", "cluster:"))
	}
	tc.Kill(n1, syscall.SIGKILL)

	back := harness.Resume(t, n2, id, expiry, 60*time.Second)
	harness.ResendUntilAcknowledged(t, n2, prefix+"-pub", pub)
	got := 0
	deadline := time.After(30 * time.Second)
	for quiet := (<-chan time.Time)(nil); ; {
		select {
		case p := <-back.In:
			switch string(p.Payload) {
			case clustertest.Probe:
			case "m1":
				got++
				quiet = time.After(3 * time.Second) // a second copy would follow soon
			default:
				t.Errorf("unexpected message %q", p.Payload)
			}
			continue
		case <-quiet:
		case <-deadline:
		}
		break
	}
	if got != 1 {
		t.Fatalf("group ga got the acknowledged QoS 2 message %d times, want once\nn2:\n%s", got, harness.GrepLog(n2, prefix+"-", "cluster:", "share group"))
	}
}
