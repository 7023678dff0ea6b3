package cluster_test

import (
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestClusterClaimRetryReadsDeadNodesHeld: a message held for a dead
// node's persistent session reaches the session when a claim's first try
// wrote the owner record but could not read the session (its partition
// stream was electing a leader), and the client's next CONNECT reads it
// only after this node dropped the dead node's orphan interest (the
// janitors' scan, 3 s later). That try names no previous owner (the
// record names this node already), so before, it read the held subjects
// of the live nodes and of those still held for, not the dead node's:
// the message, acknowledged, was lost for the session
// (TestClusterQoS2ResendUnconfirmedIsRouted met it in 1 run of 80). The
// read-late fault makes n1's reads of hh-sub's session fail until n1 kept
// orphan interest and dropped it.
func TestClusterClaimRetryReadsDeadNodesHeld(t *testing.T) {
	t.Parallel() // see harness_test.go
	// A long adopt_after: the publish below must be held for n2 (by n1's
	// orphan interest, which the janitors' scan ends) although it may
	// wait for a leader election of the stream n2 led.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "read-late=hh-sub@n1", Config: "cluster:\n  adopt_after: 12s\n"})
	n1, n2 := tc.Nodes[0], tc.Nodes[1]
	const expiry = 300
	// The publisher on n1: n1 knows hh-sub's interest on n2, and keeps
	// it as orphan interest once n2's routes close.
	_, pub := harness.PersistentPair(t, n2, n1, "hh", expiry)
	tc.Kill(n2, syscall.SIGKILL)
	expiryProp := uint32(expiry)
	resumeOnN1 := func() (*harness.Client, error) {
		c, ack, err := harness.TryConnect(t, n1, &paho.Connect{ClientID: "hh-sub", CleanStart: false, KeepAlive: 30,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiryProp}})
		switch {
		case err != nil:
			return nil, err
		case ack.ReasonCode != 0 || !ack.SessionPresent:
			c.Disconnect(&paho.Disconnect{})
			return nil, fmt.Errorf("CONNACK 0x%02X, session present %v", ack.ReasonCode, ack.SessionPresent)
		}
		return c, nil
	}
	// A client tries again as clients do (every 250 ms here).
	retry := func(what string, d time.Duration, try func() (bool, error)) {
		t.Helper()
		deadline := time.Now().Add(d)
		for {
			done, err := try()
			if done {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %v: %v; n1's log:\n%s", what, d, err, harness.GrepLog(n1, "hh-", "cluster:", "cluster node"))
			}
			time.Sleep(250 * time.Millisecond) // a client's pause between tries
		}
	}

	// hh-sub's first CONNECT on n1: the claim writes the record (n1 now,
	// so the janitors leave it alone) and cannot read the session.
	retry("n1's claim of hh-sub", 30*time.Second, func() (bool, error) {
		if c, err := resumeOnN1(); err == nil {
			t.Fatalf("hh-sub resumed on n1 at once (%v): the read-late fault did not hold", c.ID)
		}
		claimed := harness.CountLog(n1, `"client id claimed from another node" node=n1 client_id=hh-sub previous=n2`) > 0
		return claimed, errors.New("no claim recorded yet")
	})
	// Held for n2 by n1. Without a quorum for the held subject's stream
	// yet (n2 may have led it) the outcome is unknown: publish again on
	// a new connection (QoS 1: a copy more is allowed).
	retry("publish held for n2", 10*time.Second, func() (bool, error) {
		rc, closed := pub.TryPublish(t, &paho.Publish{Topic: "hh/q1", QoS: 1, Payload: []byte("held")})
		if !closed && rc == 0 {
			return true, nil
		}
		err := fmt.Errorf("PUBACK 0x%02X, closed %v", rc, closed)
		if closed {
			harness.Eventually(t, 10*time.Second, func() error { return harness.Redial(t, n1, "hh-pub2", &pub) })
		}
		return false, err
	})
	// The next CONNECTs, until n1 reads the session, once it dropped
	// n2's orphan interest (after adopt_after + 3 s).
	var back *harness.Client
	retry("hh-sub resumed on n1", 60*time.Second, func() (bool, error) {
		c, err := resumeOnN1()
		back = c
		return err == nil, err
	})
	if p := back.Next(t, 10*time.Second); string(p.Payload) != "held" {
		t.Fatalf("hh-sub got %q on %s, want the message held for n2", p.Payload, p.Topic)
	}
}
