package repro_test

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"github.com/roost-mqtt/roost/internal/clustertest"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// TestReproDroppedCopyPacketID: a share group member's queued QoS 2 copy
// that was sent to its client, whose PUBREC the node never recorded, and
// whose group was claimed for another member before the session's
// adoption elsewhere, is dropped there, but its packet id must not be
// given to the session's next QoS 2 message: the client, which holds the
// id as received and awaiting PUBREL, takes that message for the dropped
// one sent again, acknowledges it and does not deliver it
// [MQTT-4.3.3-10]. Before, the adoption numbered the ids on from the
// highest left, and the next message got the dropped one's: acknowledged
// by the client, lost (test/jepsen TestClusterFull short faults, seed
// 407: pub0#242 sent to g0m1 on n3 as packet 10 and acknowledged with
// PUBREC 30 ms before n3's kill, its group claim never made; pub0's
// resend on n2 claimed g0 for g0m0; g0m1's adoption on n2 dropped the
// copy and gave pub2#246 packet 10; bench/jepsen/RESULTS.md, "runs25").
//
// dp-a, live on n1, gets m1 from a raw publisher there: served-unclaimed
// leaves out the first routing's group claim (n1 dying between the
// delivery and the claim, as n3 did), and unconfirmed fails the forward
// to dp-plain on n3, so the publisher is not answered; dp-a's client
// holds m1's packet id without its PUBREC reaching the node, and leaves.
// The publisher's resend on n3 gives the group to dp-b there (the group
// gets m1 twice: the window the fault stands for, not this test's
// subject). dp-a resumes on n2, which takes its session live from n1 and
// drops m1's copy (the group claimed for dp-b); then m2, a QoS 2 message
// on a plain filter of dp-a's only, must reach dp-a.
func TestReproDroppedCopyPacketID(t *testing.T) {
	t.Parallel() // see harness.Main
	const prefix = "dp"
	ida, topic, only := prefix+"-a", prefix+"/x", prefix+"q/y"
	// The publisher's PUBREC waits for the failed forward: forward_timeout.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "served-unclaimed=" + prefix + "-pub@n1,unconfirmed=" + topic + "@n1", Config: "cluster:\n  forward_timeout: 4s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	share := "$share/dg/" + prefix + "/+"
	plain := harness.Connect(t, n3, prefix+"-plain") // a forward to n3: unconfirmed's way
	plain.Sub(t, paho.SubscribeOptions{Topic: prefix + "/+", QoS: 2})
	harness.Connect(t, n1, prefix+"-probe").AwaitInterest(t, prefix+"/probe")
	b := harness.NewPersistent(t, n3, prefix+"-b", paho.SubscribeOptions{Topic: share, QoS: 2})

	a := &qos2Receiver{id: ida, awaiting: map[uint16]bool{}, got: map[string]int{}}
	c := a.connect(t, n1, true)
	c.Subscribe(share, 2)
	c.Send(&packet.Subscribe{PacketID: 2, Subscriptions: []packet.Subscription{{Filter: only, Options: packet.SubOptions{QoS: 2}}}})
	if ack, ok := c.Next(mqtttest.AckBound).(*packet.Suback); !ok || ack.ReasonCodes[0] != 2 {
		t.Fatalf("SUBACK %+v for %s", ack, only)
	}
	pc, _, err := harness.RawPublisher(t, n1, prefix+"-pub", true)
	if err != nil {
		t.Fatal(err)
	}
	pub := &packet.Publish{QoS: 2, PacketID: 9, Topic: topic, Payload: []byte("m1")}
	if rc, closed := harness.ExchangeQoS2(t, pc, pub); !closed {
		t.Fatalf("PUBLISH answered PUBREC 0x%02X, want the connection closed (outcome unknown)", byte(rc))
	}
	a.withhold = true // its PUBREC lost with the connection
	a.read(t, c, "m1", 10*time.Second)
	c.NC.Close()
	if a.got["m1"] == 0 || harness.CountLog(n1, `"cluster: test fault: a first routing's share group claims left out" node=n1 client_id=`+prefix+"-pub") == 0 {
		t.Skipf("%s did not get m1 on n1 unclaimed (got %v): the test missed its path", ida, a.got)
	}
	harness.ResendUntilAcknowledged(t, n3, prefix+"-pub", pub)
	b.Next(t, 30*time.Second) // the group's second copy (see above)

	a.withhold = false
	c = a.connect(t, n2, false)
	if harness.CountLog(n2, `"cluster: a queued share group copy dropped at its adoption: the group was claimed for another member" node=n2 client_id=`+ida) == 0 {
		t.Skipf("n2 kept %s's copy of m1 (its adoption's claim came first, or the session was not moved live): the test missed its path", ida)
	}
	if rc := harness.Connect(t, n2, prefix+"-pub2").Pub(t, &paho.Publish{Topic: only, QoS: 2, Payload: []byte("m2")}); rc != 0 {
		t.Fatalf("m2: PUBREC 0x%02X", rc)
	}
	a.read(t, c, "m2", 20*time.Second)
	if a.got["m2"] != 1 || a.got["m1"] != 1 {
		t.Fatalf("%s got %v, want m1 (on n1) and the acknowledged m2 once each: m2 was given the packet id of m1's dropped copy, "+
			"which the client held awaiting PUBREL\nn1:\n%s\nn2:\n%s", ida, a.got,
			harness.GrepLog(n1, "client_id="+ida), harness.GrepLog(n2, "client_id="+ida))
	}
}

// qos2Receiver is a raw MQTT 5 persistent session that keeps its QoS 2
// receive state across connections, as a client must (test/jepsen's
// subscriber does the same): a PUBLISH whose packet id awaits PUBREL is
// acknowledged, not delivered again [MQTT-4.3.3-10].
type qos2Receiver struct {
	id       string
	awaiting map[uint16]bool
	got      map[string]int // delivered, by payload
	withhold bool           // send no PUBREC, as a connection lost right after the PUBLISH
}

// connect starts (clean) or resumes the session on nd, within 60 s: a
// claim may be refused while the nodes settle.
func (r *qos2Receiver) connect(t *testing.T, nd *harness.Node, clean bool) *mqtttest.Client {
	t.Helper()
	var c *mqtttest.Client
	harness.Eventually(t, 60*time.Second, func() error {
		var err error
		var ack *packet.Connack
		if c, ack, err = harness.RawPublisher(t, nd, r.id, clean); err == nil && !clean && !ack.SessionPresent {
			t.Fatalf("%s on %s: Session Present 0", r.id, nd.Name)
		}
		return err
	})
	return c
}

// read handles c's packets until want was delivered or d passed.
func (r *qos2Receiver) read(t *testing.T, c *mqtttest.Client, want string, d time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(d); r.got[want] == 0 && time.Now().Before(deadline); {
		p, err := c.Read(time.Until(deadline))
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return
			}
			t.Fatalf("%s: %v", r.id, err)
		}
		switch p := p.(type) {
		case *packet.Publish:
			r.take(c, p)
		case *packet.Pubrel:
			delete(r.awaiting, p.PacketID)
			c.Send(&packet.Pubcomp{PacketID: p.PacketID})
		}
	}
}

func (r *qos2Receiver) take(c *mqtttest.Client, p *packet.Publish) {
	deliver := func() {
		if s := string(p.Payload); s != clustertest.Probe {
			r.got[s]++
		}
	}
	switch p.QoS {
	case 0:
		deliver()
	case 1:
		deliver()
		c.Send(&packet.Puback{PacketID: p.PacketID})
	case 2:
		if !r.awaiting[p.PacketID] {
			r.awaiting[p.PacketID] = true
			deliver()
		}
		if !r.withhold {
			c.Send(&packet.Pubrec{PacketID: p.PacketID})
		}
	}
}
