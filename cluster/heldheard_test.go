package cluster_test

import (
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
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
// read-late fault makes n1's reads of hh-sub's session fail for as long
// as n1 keeps orphan interest. Not parallel: the fault is in the
// environment of the nodes it starts.
func TestClusterClaimRetryReadsDeadNodesHeld(t *testing.T) {
	t.Setenv("ROOST_TEST_FAULT", "read-late=hh-sub@n1")
	// A long adopt_after: n1's first claim must come before the
	// janitors adopt hh-sub's session (else they would read n2's held
	// subject themselves), and the publish before it may wait for a
	// leader election of the stream n2 led.
	cfg := filepath.Join(t.TempDir(), "roost.yaml")
	writeAtomic(t, cfg, []byte("cluster:\n  adopt_after: 12s\n"), 0o644)
	tc := startClusterWith(t, 3, "--config", cfg)
	n1, n2, n3 := tc.nodes[0], tc.nodes[1], tc.nodes[2]
	const expiry = 300
	_, pub := persistentPair(t, n2, n3, "hh", expiry)
	tc.kill(n2, syscall.SIGKILL)

	// Held for n2 by n3 (its orphan interest, or the forward that was
	// out when n2's routes closed). Without a quorum for the held
	// subject's stream yet (n2 may have led it) the outcome is unknown:
	// publish again on a new connection (QoS 1: a copy more is allowed).
	for i := 0; ; i++ {
		rc, closed := pub.tryPublish(t, &paho.Publish{Topic: "hh/q1", QoS: 1, Payload: []byte("held")})
		if !closed && rc == 0 {
			break
		}
		if i == 5 {
			t.Fatalf("publish after n2's kill: PUBACK 0x%02X, closed %v, 6 times", rc, closed)
		}
		eventually(t, 30*time.Second, func() error { return redial(t, n3, "hh-pub2", &pub) })
	}

	// The client tries again as a client does (every 250 ms here), until
	// n1 reads the session, once it dropped n2's orphan interest.
	var back *client
	expiryProp := uint32(expiry)
	deadline := time.Now().Add(60 * time.Second)
	for back == nil {
		c, ack, err := tryConnect(t, n1, &paho.Connect{ClientID: "hh-sub", CleanStart: false, KeepAlive: 30,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiryProp}})
		switch {
		case err == nil && ack.ReasonCode == 0 && ack.SessionPresent:
			back = c
			continue
		case err == nil:
			c.Disconnect(&paho.Disconnect{})
			err = fmt.Errorf("CONNACK 0x%02X, session present %v", ack.ReasonCode, ack.SessionPresent)
		}
		if time.Now().After(deadline) {
			t.Fatalf("hh-sub not resumed on n1 within 60 s: %v", err)
		}
		time.Sleep(250 * time.Millisecond) // a client's pause between tries
	}
	if countLog(n1, "test fault read-late") == 0 {
		t.Fatalf("n1 read hh-sub's session at its first try: the test did not take the path it is for; n1's log:\n%s",
			grepLog(n1, "hh-sub", "cluster:"))
	}
	p := back.next(t, 10*time.Second)
	if string(p.Payload) != "held" {
		t.Fatalf("hh-sub got %q on %s, want the message held for n2", p.Payload, p.Topic)
	}
}
