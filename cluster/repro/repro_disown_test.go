package repro_test

import (
	"testing"
	"time"

	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// TestReproOpsAfterDisown: a node answering a release request keeps
// replicating the session's ops until it takes the session off the broker.
// Before, it stopped (disown) and then waited up to 2 s more for the
// session's held messages (awaitHeld) while the client was still connected
// there: the ops of that time (a persistent publisher's QoS 2 packet ids
// with their nonces) stayed in its own store, a Wait for them returned at
// once, the messages were routed and acknowledged, and the claimer, whose
// request was answered after its releaseTimeout, read the session from
// the stream without those ids: the publisher's DUP resend there was
// routed again under a new nonce and every subscriber got it twice
// (test/jepsen TestClusterFull seed 41, 2026-12-05 06:21: pub0#211-216, 13
// QoS 2 duplicates). The held-pending fault makes n1's held waits take
// their bound and keeps n1's watcher from fencing the publisher (the newer
// record was seen there before the session was in the server); with
// release-late the request is handled heldWaitMax after it came (queued
// behind another request's held wait), so that the answer comes after
// n2's releaseTimeout although the waits share one bound.
func TestReproOpsAfterDisown(t *testing.T) {
	t.Parallel() // see harness.Main
	const id = "dp-pub"
	// n2's claim outwaits its releaseTimeout (3 s) and reads the stream,
	// within forward_timeout: 15 s, not the default 5, leaves that read
	// 12 s (2 s were too few at load in a suite run: "reading the session
	// of dp-pub: session stream: consumer ...", the CONNECT closed without
	// CONNACK). A long adopt_after: no janitor takes part.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "held-pending=" + id + "@n1,release-late=" + id + "@n1", Config: "cluster:\n  adopt_after: 60s\n  forward_timeout: 15s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	sub := harness.OriginSub(t, n3, "dp-sub", "dp/#")
	harness.AwaitOriginProbes(t, n1, "dp/probe", sub)

	first, _, err := harness.RawPublisher(t, n1, id, true)
	if err != nil {
		t.Fatal(err)
	}
	defer first.NC.Close()

	// The client connects again on n2 (the first connection left open,
	// as a client whose CONNACK timed out does): n2 claims the id and
	// asks n1, which answers 4 s later (release-late, then its held
	// waits), too late.
	type resumed struct {
		c   *mqtttest.Client
		ack *packet.Connack
		err error
	}
	second := make(chan resumed, 1)
	go func() {
		c, ack, err := harness.RawPublisher(t, n2, id, false)
		second <- resumed{c, ack, err}
	}()
	tc.WaitLog(n1, `"cluster: test fault: held messages pending for a release request" node=n1 client_id=`+id, 1, 20*time.Second)

	// During the held wait: a QoS 2 PUBLISH on n1, acknowledged there;
	// its PUBREL never sent (the client moved on). Or not routed at all:
	// n1 asks the owner records before the first routing of a QoS 2 id
	// (broker.OwnerChecker), which name n2 by now, and ends the
	// connection as taken over (0x8E); the resend on n2 is then the
	// message's only routing. Either way the subscriber gets it once.
	pub := &packet.Publish{Topic: "dp/x", QoS: 2, PacketID: 7, Payload: []byte("once")}
	first.Send(pub)
	switch got := first.Next(10 * time.Second).(type) {
	case *packet.Pubrec:
		if got.ReasonCode >= 0x80 {
			t.Fatalf("PUBLISH on n1: PUBREC 0x%02X", got.ReasonCode)
		}
	case *packet.Disconnect:
		if got.ReasonCode != 0x8E {
			t.Fatalf("PUBLISH on n1: DISCONNECT 0x%02X, want PUBREC or 0x8E (taken over)", got.ReasonCode)
		}
		t.Logf("n1 did not route the PUBLISH: its client id is owned by n2 (DISCONNECT 0x8E)")
	default:
		t.Fatalf("PUBLISH on n1: got %+v, want PUBREC or DISCONNECT 0x8E", got)
	}

	r := <-second
	if r.err != nil {
		t.Fatalf("resuming %s on n2: %v", id, r.err)
	}
	defer r.c.NC.Close()
	if !r.ack.SessionPresent {
		t.Fatalf("%s on n2: Session Present 0", id)
	}
	if harness.CountLog(n2, `"session moved here" node=n2 client_id=`+id+` from="replicated record"`) == 0 {
		t.Fatalf("n2 did not read %s from the stream: the test did not take the path of the fault; n2:\n%s", id, harness.GrepLog(n2, id))
	}
	// The resend on n2 must not reach the subscriber a second time.
	resend := *pub
	resend.Dup = true
	if rc, closed := harness.ExchangeQoS2(t, r.c, &resend); closed || rc >= 0x80 {
		t.Fatalf("resend on n2: closed %v, PUBREC 0x%02X", closed, byte(rc))
	}
	harness.AwaitOnce(t, n3, sub, "once", 20*time.Second, func() string { return harness.GrepLog(n1, id) + harness.GrepLog(n2, id) })
}
