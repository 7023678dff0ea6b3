package repro_test

import (
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"github.com/roost-mqtt/roost/packet"
)

// TestReproClaimDuringTakeover: found by test/jepsen TestClusterFull
// (seed 41), where a persistent subscriber lost its subscription and
// queue. A session lives on n3, offline, with a message queued; n3 is
// paused. The client connects to n2: n2 records itself as the owner and
// waits for n3 to let go (it never answers while paused), then reads the
// session from its stream. While n2 waits, the client connects to n1
// (its earlier attempt timed out, say): n1 records itself and asks n2 to
// let go. n2 holds the record but not yet the session, and answered
// "nothing to hand over": n1 started the client afresh, Session Present 0
// on a session the cluster still had [MQTT-3.2.2-3]. It must answer
// "read it from the stream", and n1 must find the session and its queue.
func TestReproClaimDuringTakeover(t *testing.T) {
	t.Parallel() // see harness.Main
	tc := harness.StartCluster(t, 3)
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	const id = "race-sub"
	queuedOffline(t, tc, n3, n1, id, "race/t")

	tc.Kill(n3, syscall.SIGSTOP)
	defer tc.Kill(n3, syscall.SIGCONT)
	// n2 records itself and asks paused n3 to let go (3 s).
	claimOn(t, tc, n2, id, harness.QueuedExpiry)
	resumeQueued(t, n1, id, "claimed on n1 while n2's takeover was under way", n1, n2)
}

// queuedOffline leaves a persistent session of id on home, offline, with
// a QoS 1 message ("queued") on topic queued for it, published on via
// once home's interest reached via.
func queuedOffline(t *testing.T, tc *harness.Cluster, home, via *harness.Node, id, topic string) {
	t.Helper()
	expiry := uint32(harness.QueuedExpiry)
	sub, ack := harness.ConnectWith(t, home, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
	if ack.ReasonCode != 0 {
		t.Fatalf("CONNACK 0x%02X", ack.ReasonCode)
	}
	sub.Sub(t, paho.SubscribeOptions{Topic: topic, QoS: 1})
	pub := harness.Connect(t, via, id+"-pub")
	pub.AwaitInterest(t, topic)
	sub.Disconnect(&paho.Disconnect{}) // the session stays on home, offline
	tc.WaitLog(home, "client_id="+id+` reason="client disconnected normally"`, 1, harness.Wait)
	if rc := pub.Pub(t, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte("queued")}); rc != 0 {
		t.Fatalf("publish: PUBACK 0x%02X", rc)
	}
}

// resumeQueued connects id to its session of queuedOffline on nd (Clean
// Start 0) until the CONNACK is 0x00 (a refusal while a stream elects a
// leader is tried again). Accepted without the session, it fails the test
// at once (what says how the session came to be lost, with the lines of
// logsOf's logs about id); with it, the queued message must come. It
// returns the resumed client.
func resumeQueued(t *testing.T, nd *harness.Node, id, what string, logsOf ...*harness.Node) *harness.Client {
	t.Helper()
	expiry := uint32(harness.QueuedExpiry)
	var back *harness.Client
	harness.Eventually(t, 60*time.Second, func() error {
		c, ack, err := harness.TryConnect(t, nd, &paho.Connect{ClientID: id, KeepAlive: 30,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
		if err != nil {
			return err
		}
		if ack.ReasonCode != 0 {
			return fmt.Errorf("CONNACK 0x%02X", ack.ReasonCode) // a stream electing a leader: try again
		}
		if !ack.SessionPresent {
			var logs strings.Builder
			for _, o := range logsOf {
				fmt.Fprintf(&logs, "\n%s:\n%s", o.Name, harness.GrepLog(o, id))
			}
			t.Fatalf("%s: Session Present 0%s", what, logs.String())
		}
		back = c
		return nil
	})
	if p := back.Next(t, 30*time.Second); string(p.Payload) != "queued" {
		t.Fatalf("the resumed session got %q, want the queued message", p.Payload)
	}
	return back
}

// claimOn sends CONNECTs for a persistent session of id to nd (bare
// sockets, left open) until nd has recorded itself as the owner and asks
// the previous owner to let go. An attempt may first be refused while the
// ownership records elect a leader (after a fault on their leader).
func claimOn(t *testing.T, tc *harness.Cluster, nd *harness.Node, id string, expiry uint32) {
	t.Helper()
	claimUntil(t, nd, id, expiry, 60*time.Second, func() bool { return harness.CountLog(nd, "client_id="+id+" previous=") > 0 })
}

// claimUntil sends CONNECTs for a persistent session of id to nd until
// done, one at a time: a new one only once nd closed the last (its claim
// refused or given up, as while the streams or the ownership records
// elect leaders after a fault). Two left open at once, the older one's
// claim could come after the test had resumed the client elsewhere and
// take it back (TestReproGroupClaimAbandoned under load: its resumed
// client taken over, 0x8E, by a CONNECT the test had sent 8 s before).
func claimUntil(t *testing.T, nd *harness.Node, id string, expiry uint32, bound time.Duration, done func() bool) {
	t.Helper()
	var closed <-chan struct{}
	for deadline := time.Now().Add(bound); !done(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: no claim of %s got as far as the test needs within %v; %s:\n%s", nd.Name, id, bound, nd.Name, harness.GrepLog(nd, "client_id="+id))
		}
		if closed == nil {
			closed = rawConnect(t, nd, id, expiry)
			continue
		}
		select {
		case <-closed:
			closed = nil
		default:
		}
	}
}

// rawConnect sends a CONNECT for a persistent session of id to nd over a
// bare socket, without waiting for the CONNACK; the socket stays open
// until the test ends or nd closes it, which the returned channel says
// (nil: the dial failed, a node still starting). The packet codec rather
// than a client library: the connection is abandoned, which a library
// would report from another goroutine.
func rawConnect(t *testing.T, nd *harness.Node, id string, expiry uint32) <-chan struct{} {
	nc, err := net.DialTimeout("tcp", nd.MQTT, harness.Wait)
	if err != nil {
		return nil
	}
	t.Cleanup(func() { nc.Close() })
	c := &packet.Connect{ProtocolVersion: packet.V5, ClientID: id, KeepAlive: 30}
	c.Properties.SessionExpiry = expiry
	c.Properties.Set(packet.PropSessionExpiry)
	b, err := c.Encode(nil, packet.V5)
	if err != nil {
		t.Error(err)
		nc.Close()
		return nil
	}
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		io.Copy(io.Discard, nc) // until nd closes it (or the test's cleanup)
	}()
	if _, err := nc.Write(b); err != nil {
		nc.Close()
	}
	return closed
}
