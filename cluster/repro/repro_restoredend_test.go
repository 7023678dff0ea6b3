package repro_test

import (
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestReproRestoredSessionEnd: a restarted node that drops a restored
// session because another node owns it now ends it in its own store only.
// Before, the end was also queued for the session's partition stream, and
// a queued op is sent at the epoch of the node's claim of the id current
// when it is sent: while that partition stream had no quorum, the node's
// own new claim of the id came first (its read of the session from the
// stream failed), the end followed into the stream at the new claim's
// epoch, and the client's next CONNECT read an ended session: Session
// Present 0, its subscriptions and queued messages gone (test/jepsen
// TestClusterFull seed 44: ps1, twice in 60 s). The no-quorum fault keeps
// the partition stream from taking n3's ops from its restart until its
// first read of rs-sub's session, which fails as the stream comes back.
func TestReproRestoredSessionEnd(t *testing.T) {
	t.Parallel() // see harness.Main
	const id = "rs-sub"
	// A long adopt_after: no janitor adopts rs-sub while n1 is dead. A
	// long forward_timeout: the partition stream may elect a leader
	// after n1's kill.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Config: "cluster:\n  adopt_after: 60s\n  forward_timeout: 15s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	const expiry = 300
	_, pub := harness.PersistentPair(t, n3, n2, "rs", expiry)

	// rs-sub's session is in n3's store; n3 dies, and rs-sub resumes on
	// n1, which reads it from the stream, and leaves it there with a
	// message queued.
	tc.Kill(n3, syscall.SIGKILL)
	back := harness.Resume(t, n1, id, expiry, 60*time.Second)
	back.Disconnect(&paho.Disconnect{})
	harness.Eventually(t, 60*time.Second, func() error {
		if rc, closed := pub.TryPublish(t, &paho.Publish{Topic: "rs/q1", QoS: 1, Payload: []byte("queued")}); closed {
			// The outcome is unknown: publish again on a new connection.
			if err := harness.Redial(t, n2, "rs-pub2", &pub); err != nil {
				return err
			}
			return errors.New("connection closed before the PUBACK")
		} else if rc != 0 {
			t.Fatalf("PUBACK 0x%02X", rc)
		}
		return nil
	})

	// n3 comes back with rs-sub's old copy and drops it (n1 owns it),
	// its partition stream without a quorum for n3 until n3 reads it.
	n3.Env = append(n3.Env, "ROOST_TEST_FAULT=no-quorum="+id+"@n3")
	restored := harness.WatchRestored(n3, id)
	tc.Start(n3)
	if restored.Wait(t, 60*time.Second, nil) {
		t.Skipf("n3's restored copy of %s was fenced by its owner-record watcher before the owners read: the drop's end, this test's path, never ran", id)
	}
	tc.Kill(n1, syscall.SIGKILL)

	// rs-sub connects to n3: the first claim cannot read the session
	// (the fault), the client tries again; the first CONNACK must bring
	// the session and its queued message.
	expiryProp := uint32(expiry)
	var ack *paho.Connack
	harness.Eventually(t, 60*time.Second, func() error {
		c, a, err := harness.TryConnect(t, n3, &paho.Connect{ClientID: id, CleanStart: false, KeepAlive: 30,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiryProp}})
		if err != nil {
			return err
		}
		if a.ReasonCode != 0 {
			c.Disconnect(&paho.Disconnect{})
			return fmt.Errorf("CONNACK 0x%02X", a.ReasonCode)
		}
		back, ack = c, a
		return nil
	})
	if harness.CountLog(n3, `"client id claimed from another node" node=n3 client_id=`+id+` previous=n1`) == 0 {
		t.Fatalf("n3 never claimed %s from n1: the test did not take the path of the fault; n3:\n%s", id, harness.GrepLog(n3, id))
	}
	if !ack.SessionPresent {
		t.Fatalf("CONNACK on n3 with Session Present 0: the session was ended in the stream; n3:\n%s", harness.GrepLog(n3, id, "not replicated"))
	}
	if p := back.Next(t, 20*time.Second); string(p.Payload) != "queued" {
		t.Fatalf("%s got %q on %s, want the message queued on n1", id, p.Payload, p.Topic)
	}
}
