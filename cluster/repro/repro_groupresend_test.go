package repro_test

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"github.com/roost-mqtt/roost/internal/clustertest"
	"github.com/roost-mqtt/roost/packet"
)

// TestReproGroupResend: a QoS 2 message's resend under the same Origin
// and a kept copy (bench/jepsen/RESULTS.md, "Share-group resends"). Four
// nodes. gr-sub's persistent session on n2, offline, is group ga's only
// member. Its client connects to n3, whose release request waits
// (delay-release) and whose adoption would wait for a newer claim
// (overtaken): n2 fences the copy. A persistent publisher on n1 sends a
// QoS 2 message that ga's copy on n2 takes (kept in n2's held subject for
// gr-sub, naming ga) and whose confirmation then fails (fault
// unconfirmed, as when a node did not confirm in time): the publisher is
// not answered, its packet id stays unrouted. Once the copy ended, n3 is
// killed, a live member of ga connects on n1, the publisher resends the
// message (DUP) on n1, and gr-sub resumes on n4, whose reader finds the
// kept copy. (A pause of n3, as in the fence-window tests, stalled the
// publisher's inbound op behind a partition stream's election.)
//
// Before, the resend's routing gave ga's copy to the live member, and
// gr-sub's reader claimed ga for gr-sub and delivered the kept copy too:
// ga got the message twice. reader-first resumes gr-sub before the
// resend (the reader's claim first): ga must get it once either way, and
// never lose it. kept-here has no live member and resumes gr-sub on n2
// before the resend: n2 had noted ga as served under the Origin when it
// gave the message to the copy, and its reader left the kept copy, the
// resend too (routed to n2, where ga is now): lost.
func TestReproGroupResend(t *testing.T) {
	t.Parallel() // see harness.Main
	for _, tt := range []struct {
		name, prefix string
		// reader: the node gr-sub resumes on (index); first: before the
		// resend; live: a live member of ga on n1.
		reader      int
		first, live bool
	}{
		{"resend-first", "grs", 3, false, true},
		{"reader-first", "grr", 3, true, true},
		{"kept-here", "grk", 1, true, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// On a busy machine n2 may hand the copy over live to n3
			// before its fence ends it (n3's delayed release request
			// came within n2's fence grace): the copy's queue then
			// moves with the message, which is the first routing's
			// case, not this test's. Seen once in five runs at load 30.
			// A new cluster tries again; three misses fail.
			for attempt := 1; !groupResend(t, fmt.Sprintf("%s%d", tt.prefix, attempt), tt.reader, tt.first, tt.live); attempt++ {
				if attempt == 3 {
					t.Fatalf("n2's copy moved live to n3 in %d attempts: the test never took its path", attempt)
				}
				t.Logf("attempt %d: n2's copy moved live to n3 before its fence ended it; again", attempt)
			}
		})
	}
}

// groupResend runs the scenario with the client ids PREFIX-*, and
// returns false, having checked nothing, when n2's copy moved live to n3
// instead of ending at its fence.
func groupResend(t *testing.T, prefix string, reader int, resumeFirst, withLive bool) bool {
	id := prefix + "-sub"
	// A short forward_timeout: the first routing waits for it on n3.
	topic := prefix + "/x"
	tc := harness.StartClusterSetup(t, 4, harness.Setup{Fault: "delay-release=" + id + "@n3,overtaken=" + id + "@n3,unconfirmed=" + topic + "@n1", Config: "cluster:\n  adopt_after: 60s\n  forward_timeout: 6s\n"})
	n1, n2, n3, rd := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2], tc.Nodes[reader]
	expiry := uint32(harness.QueuedExpiry)
	sub, ack := harness.ConnectWith(t, n2, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
	if ack.ReasonCode != 0 {
		t.Fatalf("CONNACK 0x%02X", ack.ReasonCode)
	}
	sub.Sub(t, paho.SubscribeOptions{Topic: "$share/ga/" + prefix + "/+", QoS: 2})
	sub.Disconnect(&paho.Disconnect{}) // the session stays on n2, offline
	tc.WaitLog(n2, "client_id="+id+` reason="client disconnected normally"`, 1, harness.Wait)
	harness.Connect(t, n1, prefix+"-probe").AwaitInterest(t, prefix+"/probe") // n1 knows n2's member
	pc, _, err := harness.RawPublisher(t, n1, prefix+"-pub", true)
	if err != nil {
		t.Fatal(err)
	}

	claimOn(t, tc, n3, id, expiry)
	tc.WaitLog(n2, `(owner records)" node=n2 client_id=`+id, 1, 60*time.Second)
	ended := `"session ended: its client id is owned by another node" client_id=` + id
	if harness.CountLog(n2, ended) > 0 {
		t.Fatalf("n2's copy of %s ended before the test published into its fence window", id)
	}
	pub := &packet.Publish{QoS: 2, PacketID: 11, Topic: topic, Payload: []byte("m1")}
	if rc, closed := harness.ExchangeQoS2(t, pc, pub); !closed {
		t.Fatalf("PUBLISH not confirmed (fault): PUBREC 0x%02X, want the connection closed (outcome unknown)", byte(rc))
	}
	tc.WaitLog(n2, ended, 1, 60*time.Second)
	if harness.CountLog(n3, `"session moved here" node=n3 client_id=`+id+` from=n2`) > 0 {
		return false
	}
	tc.Kill(n3, syscall.SIGKILL) // its claim never reads the kept copy
	keptOn(t, n2, id)

	live := &harness.Client{Client: &clustertest.Client{In: make(chan *paho.Publish)}} // none: nothing comes
	if withLive {
		harness.Eventually(t, 30*time.Second, func() error { return harness.Redial(t, n1, prefix+"-live", &live) })
		live.Sub(t, paho.SubscribeOptions{Topic: "$share/ga/" + prefix + "/+", QoS: 2})
	}
	// The reader on n4: n1 and n2 routed the message's Origin to ga
	// (originSeen). On n2 (kept-here), where the first routing gave it
	// to the copy, the reader must deliver it all the same.
	got := map[string]int{} // ga's copies: "live m1", "sub m1"
	var back *harness.Client
	if resumeFirst {
		back = harness.Resume(t, rd, id, expiry, 60*time.Second)
		got["sub "+string(back.Next(t, 30*time.Second).Payload)]++
	}
	harness.ResendUntilAcknowledged(t, n1, prefix+"-pub", pub)
	if !resumeFirst {
		back = harness.Resume(t, rd, id, expiry, 60*time.Second)
	}

	// ga's copies, wherever they arrive.
	total := func() int { return got["live m1"] + got["sub m1"] }
	gatherCopies(got, total, "live", live, "sub", back)
	if total() == 0 {
		t.Fatalf("the acknowledged QoS 2 message never reached group ga\nn1:\n%s\n%s:\n%s", harness.GrepLog(n1, prefix+"-", "cluster:"), rd.Name, harness.GrepLog(rd, prefix+"-", "cluster:"))
	}
	t.Logf("ga's copies: %v", got)
	if total() != 1 {
		t.Fatalf("group ga got the QoS 2 message %d times (%v), want once\nn1:\n%s\n%s:\n%s", total(), got, harness.GrepLog(n1, prefix+"-", "cluster:"), rd.Name, harness.GrepLog(rd, prefix+"-", "cluster:"))
	}
	for k, n := range got {
		if k != "live m1" && k != "sub m1" {
			t.Errorf("unexpected message %q (%d)", k, n)
		}
	}
	return true
}

// gatherCopies adds to got ("NAME payload": count) what a and b receive:
// until total (got's count of the message's copies) is above 0, for 30 s
// at most, then 3 s more for a second copy. Probes are left out.
func gatherCopies(got map[string]int, total func() int, aName string, a *harness.Client, bName string, b *harness.Client) {
	deadline, quiet := time.Now().Add(30*time.Second), time.Time{}
	for {
		if total() > 0 && quiet.IsZero() {
			quiet = time.Now().Add(3 * time.Second)
		}
		end := deadline
		if !quiet.IsZero() {
			end = quiet
		}
		left := time.Until(end)
		if left <= 0 {
			break
		}
		select {
		case p := <-a.In:
			got[aName+" "+string(p.Payload)]++
		case p := <-b.In:
			got[bName+" "+string(p.Payload)]++
		case <-time.After(left):
		}
	}
	delete(got, aName+" "+clustertest.Probe)
	delete(got, bName+" "+clustertest.Probe)
}
