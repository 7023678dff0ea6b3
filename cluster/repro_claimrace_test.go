package cluster_test

import (
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

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
	tc := startCluster(t, 3)
	n1, n2, n3 := tc.nodes[0], tc.nodes[1], tc.nodes[2]
	expiry := uint32(600)
	const id = "race-sub"
	cp := func(clean bool) *paho.Connect {
		return &paho.Connect{ClientID: id, CleanStart: clean, KeepAlive: 30,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}
	}
	sub, ack := connectWith(t, n3, cp(true))
	if ack.ReasonCode != 0 {
		t.Fatalf("CONNACK 0x%02X", ack.ReasonCode)
	}
	sub.subscribe(t, paho.SubscribeOptions{Topic: "race/t", QoS: 1})
	pub := connect(t, n1, "race-pub")
	pub.awaitInterest(t, "race/t")
	sub.Disconnect(&paho.Disconnect{}) // the session stays on n3, offline
	tc.waitLog(n3, `client_id=race-sub reason="client disconnected normally"`, 1, wait)
	if rc := pub.publish(t, &paho.Publish{Topic: "race/t", QoS: 1, Payload: []byte("queued")}); rc != 0 {
		t.Fatalf("publish: PUBACK 0x%02X", rc)
	}

	tc.kill(n3, syscall.SIGSTOP)
	defer tc.kill(n3, syscall.SIGCONT)
	// n2 records itself and asks paused n3 to let go (3 s).
	claimOn(t, tc, n2, id, expiry)

	var back *client
	eventually(t, 30*time.Second, func() error {
		c, ack, err := tryConnect(t, n1, cp(false))
		if err != nil {
			return err
		}
		if ack.ReasonCode != 0 {
			return fmt.Errorf("CONNACK 0x%02X", ack.ReasonCode) // the stream electing a leader: try again
		}
		if !ack.SessionPresent {
			t.Fatalf("claimed on n1 while n2's takeover was under way: Session Present 0\nn1:\n%s\nn2:\n%s",
				grepLog(n1, id), grepLog(n2, id))
		}
		back = c
		return nil
	})
	if p := back.next(t, 10*time.Second); string(p.Payload) != "queued" {
		t.Fatalf("the resumed session got %q, want the queued message", p.Payload)
	}
}

// claimOn sends CONNECTs for a persistent session of id to nd (bare
// sockets, left open) until nd has recorded itself as the owner and asks
// the previous owner to let go. An attempt may first be refused while the
// ownership records elect a leader (after a fault on their leader).
func claimOn(t *testing.T, tc *testCluster, nd *node, id string, expiry uint32) {
	t.Helper()
	claimed := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			rawConnect(t, nd, id, expiry)
			select {
			case <-claimed:
				return
			case <-time.After(6 * time.Second): // longer than a claim's bound (forward_timeout)
			}
		}
	}()
	tc.waitLog(nd, "client_id="+id+" previous=", 1, 60*time.Second)
	close(claimed)
	<-done
}

// rawConnect sends a CONNECT for a persistent session of id to nd over a
// bare socket, without waiting for the CONNACK; the socket stays open
// until the test ends. The packet codec rather than a client library: the
// connection is abandoned, which a library would report from another
// goroutine.
func rawConnect(t *testing.T, nd *node, id string, expiry uint32) {
	nc, err := net.DialTimeout("tcp", nd.mqtt, wait)
	if err != nil {
		return // a node still starting: the caller tries again
	}
	t.Cleanup(func() { nc.Close() })
	c := &packet.Connect{ProtocolVersion: packet.V5, ClientID: id, KeepAlive: 30}
	c.Properties.SessionExpiry = expiry
	c.Properties.Set(packet.PropSessionExpiry)
	b, err := c.Encode(nil, packet.V5)
	if err != nil {
		t.Error(err)
		return
	}
	nc.Write(b)
}
