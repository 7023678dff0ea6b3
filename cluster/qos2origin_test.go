package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/roost-mqtt/roost/internal/clustertest"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// A persistent publisher's QoS 2 exchange whose node failed mid-way must
// end with the message routed exactly once to every persistent subscriber
// when the client sends it again (DUP) on another node [MQTT-4.3.3-10,
// MQTT-4.4.0-1]: bench/jepsen/RESULTS.md, cause 6 (pub0#58 lost, pub0#300
// twice). Both tests drive the publisher with a raw client, to control
// the packet id and the resend.

const originExpiry = 600

var originPersist = packet.Properties{Present: 1 << packet.PropSessionExpiry, SessionExpiry: originExpiry}

// originConfig writes a config with short bounds: the tests wait for a
// forward timeout and an adoption.
func originConfig(t *testing.T) string {
	cfg := filepath.Join(t.TempDir(), "roost.yaml")
	writeAtomic(t, cfg, []byte("cluster:\n  adopt_after: 2s\n  forward_timeout: 2s\n"), 0o644)
	return cfg
}

// originSub connects a persistent subscriber to filter at QoS 2 on nd.
func originSub(t *testing.T, nd *node, id, filter string) *client {
	t.Helper()
	expiry := uint32(originExpiry)
	c, ack := connectWith(t, nd, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
	if ack.ReasonCode != 0 {
		t.Fatalf("%s: CONNACK 0x%02X", id, ack.ReasonCode)
	}
	// A SUBSCRIBE is refused (0x80) while the node cannot bring its
	// retained messages up to date within forward_timeout (2 s here;
	// seen at load 35 right after the start): a client tries again.
	eventually(t, 20*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 2}}})
		return err
	})
	return c
}

// awaitOriginProbes publishes probes on topic from a client on nd until every
// one of subs got one: nd knows every subscriber's interest.
func awaitOriginProbes(t *testing.T, nd *node, topic string, subs ...*client) {
	t.Helper()
	probe := connect(t, nd, "probe-"+nd.name)
	got := make([]bool, len(subs))
	eventually(t, 20*time.Second, func() error {
		probe.publish(t, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(clustertest.Probe)})
		missing := 0
		for i, s := range subs {
			got[i] = got[i] || sawProbe(s, 200*time.Millisecond)
			if !got[i] {
				missing++
			}
		}
		if missing > 0 {
			return fmt.Errorf("%d subscribers have no probe yet", missing)
		}
		return nil
	})
	probe.Disconnect(&paho.Disconnect{})
}

// sawProbe reads c's messages until a probe or d without one.
func sawProbe(c *client, d time.Duration) bool {
	for {
		select {
		case p := <-c.in:
			if string(p.Payload) == clustertest.Probe {
				return true
			}
		case <-time.After(d):
			return false
		}
	}
}

// rawPublisher resumes (or starts, with clean) the persistent session id
// on nd with a raw MQTT 5 client.
func rawPublisher(t *testing.T, nd *node, id string, clean bool) (*mqtttest.Client, *packet.Connack, error) {
	c := mqtttest.Dial(t, nd.mqtt, packet.V5)
	c.Send(&packet.Connect{ProtocolVersion: packet.V5, ClientID: id, CleanStart: clean, KeepAlive: 30, Properties: originPersist})
	// A claim answers within its node's forward_timeout (15 s at most in
	// these tests): 10 s ran out at load 30 (TestReproOpsAfterDisown).
	p, err := c.Read(publishBound)
	if err != nil {
		return nil, nil, err
	}
	ack, ok := p.(*packet.Connack)
	if !ok {
		return nil, nil, fmt.Errorf("%s: first packet %s, not CONNACK", id, p.Type())
	}
	if ack.ReasonCode != 0 {
		c.NC.Close()
		return nil, ack, fmt.Errorf("%s: CONNACK 0x%02X", id, byte(ack.ReasonCode))
	}
	return c, ack, nil
}

// exchangeQoS2 sends pub and, if the server answers PUBREC with success,
// completes the exchange. closed reports a connection the server ended
// instead (outcome unknown).
func exchangeQoS2(t *testing.T, c *mqtttest.Client, pub *packet.Publish) (rc packet.ReasonCode, closed bool) {
	t.Helper()
	c.Send(pub)
	for {
		p, err := c.Read(15 * time.Second)
		if err != nil {
			var ne interface{ Timeout() bool }
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("PUBLISH %d: no answer nor close within 15 s", pub.PacketID)
			}
			return 0, true
		}
		switch p := p.(type) {
		case *packet.Disconnect:
			continue // 0x80: outcome unknown; the close follows
		case *packet.Pubrec:
			if p.ReasonCode >= 0x80 {
				return p.ReasonCode, false
			}
			c.Send(&packet.Pubrel{PacketID: pub.PacketID})
			if pc, ok := c.Next(15 * time.Second).(*packet.Pubcomp); !ok || pc.ReasonCode != 0 {
				t.Fatalf("PUBREL %d: got %+v, want PUBCOMP 0", pub.PacketID, pc)
			}
			return p.ReasonCode, false
		default:
			t.Fatalf("PUBLISH %d: unexpected %s", pub.PacketID, p.Type())
		}
	}
}

// resendUntilAcknowledged connects id's session on nd and sends pub again
// with DUP until it is acknowledged: a hold for a dead node may time out
// while its stream elects a leader (outcome unknown again).
func resendUntilAcknowledged(t *testing.T, nd *node, id string, pub *packet.Publish) {
	t.Helper()
	resend := *pub
	resend.Dup = true
	eventually(t, 60*time.Second, func() error {
		c, ack, err := rawPublisher(t, nd, id, false)
		if err != nil {
			return err
		}
		defer c.NC.Close()
		if !ack.SessionPresent {
			t.Fatalf("%s on %s: Session Present 0", id, nd.name)
		}
		rc, closed := exchangeQoS2(t, c, &resend)
		switch {
		case closed:
			return fmt.Errorf("resend of %d on %s: closed, outcome unknown", pub.PacketID, nd.name)
		case rc >= 0x80:
			t.Fatalf("resend of %d on %s: PUBREC 0x%02X", pub.PacketID, nd.name, byte(rc))
		}
		return nil
	})
}

// awaitOnce waits up to d for want on c, then checks that no second copy
// follows within 2 s. Should the node close c's connection (its store
// could not confirm a delivery in time: outcome unknown), the session is
// resumed on nd and read on; a DUP copy after one was counted is the
// redelivery of an exchange the lost connection did not complete.
func awaitOnce(t *testing.T, nd *node, c *client, want string, d time.Duration, logs func() string) {
	t.Helper()
	n := 0
	deadline, quiet := time.Now().Add(d), time.Time{}
	take := func(p *paho.Publish) {
		switch s := string(p.Payload); {
		case s == clustertest.Probe:
		case s != want:
			t.Errorf("%s: unexpected message %q", c.id, s)
		case n > 0 && p.Duplicate():
		default:
			if n++; n == 1 {
				quiet = time.Now().Add(2 * time.Second)
			}
		}
	}
	for n == 0 && time.Now().Before(deadline) || n > 0 && time.Now().Before(quiet) {
		select {
		case p := <-c.in:
			take(p)
		case <-c.Done():
			for drained := false; !drained; {
				select {
				case p := <-c.in:
					take(p)
				default:
					drained = true
				}
			}
			t.Logf("%s: connection closed by %s; resuming the session", c.id, nd.name)
			c = resume(t, nd, c.id, originExpiry, 60*time.Second)
		case <-time.After(100 * time.Millisecond):
		}
	}
	if n != 1 {
		t.Fatalf("%s got QoS 2 message %q %d times, want once\n%s", c.id, want, n, logs())
	}
}

// TestClusterQoS2ResendUnconfirmedIsRouted: the publisher's node could not
// confirm a QoS 2 message to every node (one was paused, then killed) and
// closed the connection, keeping the packet id (outcome unknown); the
// session moves to another node with the id, and the client's DUP resend
// there must reach the subscriber whose node never took the message
// (before: answered PUBREC without routing, the message lost although
// acknowledged), and must not reach the subscriber that has it twice.
//
// It failed in about 2 runs of 5 on a loaded machine: n2 paused, then
// killed, was dropped for silence first and not held for once its routes
// closed (orphanInterest.died). Then in 2 of 50 (1 of 80 in kbugs'): n1's
// claim of o1-s1 (previous owner n2) wrote the record but could not read
// the session (its partition stream was electing a leader); the client's
// next CONNECT on n1 read it (the record naming n1 already: no previous
// owner) when n2's orphan interest had been dropped after the janitors'
// scan, so n2's held subject, which had the resend, was not read. A node
// taking a session from the stream now reads the held subjects of every
// node it heard from since it started (remoteInterest.heardNodes).
func TestClusterQoS2ResendUnconfirmedIsRouted(t *testing.T) {
	t.Parallel() // see harness_test.go
	tc := startClusterWith(t, 3, "--config", originConfig(t))
	n1, n2, n3 := tc.nodes[0], tc.nodes[1], tc.nodes[2]
	s1 := originSub(t, n2, "o1-s1", "o1/t")
	s2 := originSub(t, n3, "o1-s2", "o1/t")
	awaitOriginProbes(t, n1, "o1/t", s1, s2)
	pc, _, err := rawPublisher(t, n1, "o1-pub", true)
	if err != nil {
		t.Fatal(err)
	}

	tc.kill(n2, syscall.SIGSTOP)
	pub := &packet.Publish{QoS: 2, PacketID: 7, Topic: "o1/t", Payload: []byte("m1")}
	if rc, closed := exchangeQoS2(t, pc, pub); !closed {
		t.Fatalf("PUBLISH with a paused subscriber node: PUBREC 0x%02X, want the connection closed (outcome unknown)", byte(rc))
	}
	tc.kill(n2, syscall.SIGKILL) // never took it
	logs := func() string {
		return "n1:\n" + grepLog(n1, "o1-", "cluster:", "cluster node") + "\nn3:\n" + grepLog(n3, "o1-", "cluster:", "cluster node")
	}
	// The session moves to n3 (a live takeover from n1), with the id.
	resendUntilAcknowledged(t, n3, "o1-pub", pub)
	awaitOnce(t, n3, s2, "m1", 10*time.Second, logs)
	back := resume(t, n1, "o1-s1", originExpiry, 60*time.Second)
	awaitOnce(t, n1, back, "m1", 20*time.Second, logs)
}

// TestClusterQoS2ResendAfterNodeDiedBeforeItsID: the publisher's node
// routed a QoS 2 message and died before its packet id was replicated
// (a test fault keeps the id from the stream: the step is too short to
// hit with a signal); the client's DUP resend on another node, whose copy
// of the session has no such id, must not be routed a second time.
func TestClusterQoS2ResendAfterNodeDiedBeforeItsID(t *testing.T) {
	t.Parallel() // see harness_test.go
	tc := startClusterFault(t, 3, "stall-inbound=o2-pub@n1", "--config", originConfig(t))
	n1, n2, n3 := tc.nodes[0], tc.nodes[1], tc.nodes[2]
	s1 := originSub(t, n2, "o2-s1", "o2/t")
	awaitOriginProbes(t, n1, "o2/t", s1)
	pc, _, err := rawPublisher(t, n1, "o2-pub", true)
	if err != nil {
		t.Fatal(err)
	}
	pub := &packet.Publish{QoS: 2, PacketID: 9, Topic: "o2/t", Payload: []byte("m2")}
	if rc, closed := exchangeQoS2(t, pc, pub); !closed {
		t.Fatalf("PUBLISH whose id cannot be replicated: PUBREC 0x%02X, want the connection closed (outcome unknown)", byte(rc))
	}
	tc.kill(n1, syscall.SIGKILL)
	logs := func() string {
		return "n2:\n" + grepLog(n2, "o2-", "cluster:") + "\nn3:\n" + grepLog(n3, "o2-", "cluster:")
	}
	resendUntilAcknowledged(t, n3, "o2-pub", pub)
	awaitOnce(t, n2, s1, "m2", 10*time.Second, logs)
}
