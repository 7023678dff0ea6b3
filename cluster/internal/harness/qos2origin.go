package harness

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/internal/clustertest"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// OriginExpiry is the Session Expiry Interval of the QoS 2 origin tests'
// persistent publishers and subscribers (originPersist: the raw client's).
const OriginExpiry = 600

var originPersist = packet.Properties{Present: 1 << packet.PropSessionExpiry, SessionExpiry: OriginExpiry}

// OriginSub connects a persistent subscriber to filter at QoS 2 on nd.
func OriginSub(t *testing.T, nd *Node, id, filter string) *Client {
	t.Helper()
	expiry := uint32(OriginExpiry)
	c, ack := ConnectWith(t, nd, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
	if ack.ReasonCode != 0 {
		t.Fatalf("%s: CONNACK 0x%02X", id, ack.ReasonCode)
	}
	// A SUBSCRIBE is refused (0x80) while the node cannot bring its
	// retained messages up to date within forward_timeout (2 s here;
	// seen at load 35 right after the start): a client tries again.
	Eventually(t, 20*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 2}}})
		return err
	})
	return c
}

// AwaitOriginProbes publishes probes on topic from a client on nd until every
// one of subs got one: nd knows every subscriber's interest.
func AwaitOriginProbes(t *testing.T, nd *Node, topic string, subs ...*Client) {
	t.Helper()
	probe := Connect(t, nd, "probe-"+nd.Name)
	got := make([]bool, len(subs))
	Eventually(t, 20*time.Second, func() error {
		probe.Pub(t, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(clustertest.Probe)})
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
func sawProbe(c *Client, d time.Duration) bool {
	for {
		select {
		case p := <-c.In:
			if string(p.Payload) == clustertest.Probe {
				return true
			}
		case <-time.After(d):
			return false
		}
	}
}

// RawPublisher resumes (or starts, with clean) the persistent session id
// on nd with a raw MQTT 5 client.
func RawPublisher(t *testing.T, nd *Node, id string, clean bool) (*mqtttest.Client, *packet.Connack, error) {
	c := mqtttest.Dial(t, nd.MQTT, packet.V5)
	c.Send(&packet.Connect{ProtocolVersion: packet.V5, ClientID: id, CleanStart: clean, KeepAlive: 30, Properties: originPersist})
	// A claim answers within its node's forward_timeout (15 s at most in
	// these tests): 10 s ran out at load 30 (TestReproOpsAfterDisown).
	p, err := c.Read(PublishBound)
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

// ExchangeQoS2 sends pub and, if the server answers PUBREC with success,
// completes the exchange. closed reports a connection the server ended
// instead (outcome unknown).
func ExchangeQoS2(t *testing.T, c *mqtttest.Client, pub *packet.Publish) (rc packet.ReasonCode, closed bool) {
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

// ResendUntilAcknowledged connects id's session on nd and sends pub again
// with DUP until it is acknowledged: a hold for a dead node may time out
// while its stream elects a leader (outcome unknown again).
func ResendUntilAcknowledged(t *testing.T, nd *Node, id string, pub *packet.Publish) {
	t.Helper()
	resend := *pub
	resend.Dup = true
	Eventually(t, 60*time.Second, func() error {
		c, ack, err := RawPublisher(t, nd, id, false)
		if err != nil {
			return err
		}
		defer c.NC.Close()
		if !ack.SessionPresent {
			t.Fatalf("%s on %s: Session Present 0", id, nd.Name)
		}
		rc, closed := ExchangeQoS2(t, c, &resend)
		switch {
		case closed:
			return fmt.Errorf("resend of %d on %s: closed, outcome unknown", pub.PacketID, nd.Name)
		case rc >= 0x80:
			t.Fatalf("resend of %d on %s: PUBREC 0x%02X", pub.PacketID, nd.Name, byte(rc))
		}
		return nil
	})
}

// AwaitOnce waits up to d for want on c, then checks that no second copy
// follows within 2 s. Should the node close c's connection (its store
// could not confirm a delivery in time: outcome unknown), the session is
// resumed on nd and read on; a DUP copy after one was counted is the
// redelivery of an exchange the lost connection did not complete.
func AwaitOnce(t *testing.T, nd *Node, c *Client, want string, d time.Duration, logs func() string) {
	t.Helper()
	n := 0
	deadline, quiet := time.Now().Add(d), time.Time{}
	take := func(p *paho.Publish) {
		switch s := string(p.Payload); {
		case s == clustertest.Probe:
		case s != want:
			t.Errorf("%s: unexpected message %q", c.ID, s)
		case n > 0 && p.Duplicate():
		default:
			if n++; n == 1 {
				quiet = time.Now().Add(2 * time.Second)
			}
		}
	}
	for n == 0 && time.Now().Before(deadline) || n > 0 && time.Now().Before(quiet) {
		select {
		case p := <-c.In:
			take(p)
		case <-c.Done():
			for drained := false; !drained; {
				select {
				case p := <-c.In:
					take(p)
				default:
					drained = true
				}
			}
			t.Logf("%s: connection closed by %s; resuming the session", c.ID, nd.Name)
			c = Resume(t, nd, c.ID, OriginExpiry, 60*time.Second)
		case <-time.After(100 * time.Millisecond):
		}
	}
	if n != 1 {
		t.Fatalf("%s got QoS 2 message %q %d times, want once\n%s", c.ID, want, n, logs())
	}
}
