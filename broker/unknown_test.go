package broker

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// expectUnknownClose checks that c got DISCONNECT 0x80 with a Reason String
// saying the outcome is unknown (MQTT 5), or a plain close (3.x), and no
// acknowledgement.
func expectUnknownClose(t *testing.T, c *mqtttest.Client, v packet.Version) {
	t.Helper()
	got := c.ExpectClosed(5 * time.Second)
	if v != packet.V5 {
		if len(got) != 0 {
			t.Fatalf("3.1.1: got %v, want a plain close", got)
		}
		return
	}
	if len(got) != 1 {
		t.Fatalf("got %v, want one DISCONNECT then a close", got)
	}
	d, ok := got[0].(*packet.Disconnect)
	if !ok || d.ReasonCode != packet.UnspecifiedError || !strings.Contains(d.Properties.ReasonString, "may or may not be delivered") {
		t.Fatalf("got %+v, want DISCONNECT 0x80 saying the outcome is unknown", got[0])
	}
}

var persist = packet.Properties{Present: 1 << packet.PropSessionExpiry, SessionExpiry: 300}

// A store whose Wait fails after the publish's ops were appended (a write
// error retried later, replication that timed out) leaves the outcome
// unknown: the publisher gets no PUBACK/PUBREC, neither success nor
// failure, but DISCONNECT 0x80 (3.1.1: a close). Its persistent session
// keeps the QoS 2 id, so the DUP resend is answered PUBREC without a
// second delivery. (A store that refuses up front is answered 0x97:
// TestStoreFullRefusesQoS.)
func TestStoreWaitFailureOutcomeUnknown(t *testing.T) {
	t.Parallel()
	for _, v := range []packet.Version{packet.V5, packet.V311} {
		t.Run(fmt.Sprint("v", v), func(t *testing.T) {
			st := &failStore{}
			_, addr := startServer(t, Options{Store: st})
			sub := dial(t, addr, packet.V5)
			sub.Connect(&packet.Connect{ClientID: "sub", CleanStart: true})
			sub.Subscribe("t", 0) // QoS 0: its delivery waits for no store op
			// An offline persistent subscriber: each publish appends its
			// queued copy, which the acknowledgement waits for.
			keeper := dial(t, addr, packet.V5)
			keeper.Connect(&packet.Connect{ClientID: "keeper", CleanStart: true, Properties: persist})
			keeper.Subscribe("t", 1)
			keeper.Send(&packet.Disconnect{})
			keeper.ExpectClosed(time.Second)

			ioErr := errors.New("injected: write failed, retried")
			checkUnknownOutcomes(t, addr, v, sub, func(fail bool) {
				if fail {
					st.fail.Store(&ioErr)
				} else {
					st.fail.Store(nil)
				}
			})
		})
	}
}

// checkUnknownOutcomes is what a publish whose outcome is unknown must
// get, whatever the cause: the persistent publisher "pub" sends a QoS 1
// and then a QoS 2 message on "t" while setFail(true) makes their
// outcome unknown, each on a new connection (the first is closed), and
// is answered with neither success nor failure (expectUnknownClose);
// after setFail(false), its DUP resend of the QoS 2 one is acknowledged
// and reaches sub once.
func checkUnknownOutcomes(t *testing.T, addr string, v packet.Version, sub *mqtttest.Client, setFail func(bool)) {
	t.Helper()
	for i, qos := range []packet.QoS{1, 2} {
		pub := dial(t, addr, v)
		// 3.1.1: Clean Session 0 is the persistent session.
		pub.Connect(&packet.Connect{ClientID: "pub", CleanStart: i == 0 && v == packet.V5, Properties: persist})
		setFail(true)
		pub.Send(&packet.Publish{Topic: "t", QoS: qos, PacketID: uint16(qos), Payload: []byte(fmt.Sprint("q", qos))})
		expectUnknownClose(t, pub, v)
		setFail(false)
	}
	resendQoS2(t, addr, v, "pub", 2, "q2")
	expectOnce(t, sub, "q2")
}

// resendQoS2 reconnects client id to its session and sends QoS 2 packet
// id pid again with DUP: it must be answered PUBREC Success and complete.
func resendQoS2(t *testing.T, addr string, v packet.Version, id string, pid uint16, payload string) {
	t.Helper()
	pub := dial(t, addr, v)
	if ack := pub.Connect(&packet.Connect{ClientID: id, Properties: persist}); !ack.SessionPresent {
		t.Fatal("publisher's session not present")
	}
	pub.Send(&packet.Publish{Topic: "t", QoS: 2, PacketID: pid, Dup: true, Payload: []byte(payload)})
	if a, ok := pub.Next(5 * time.Second).(*packet.Pubrec); !ok || a.PacketID != pid || a.ReasonCode != packet.Success {
		t.Fatalf("DUP resend: got %+v, want PUBREC 0x00", a)
	}
	pub.Send(&packet.Pubrel{PacketID: pid})
	if a, ok := pub.Next(5 * time.Second).(*packet.Pubcomp); !ok || a.PacketID != pid || a.ReasonCode != packet.Success {
		t.Fatalf("PUBREL: got %+v, want PUBCOMP 0x00", a)
	}
}

// unconfirmedCluster is a Cluster whose Forward never gets a confirmation
// while fail is set: the forward timeout of a partition stream electing a
// leader.
type unconfirmedCluster struct{ fail atomic.Bool }

func (*unconfirmedCluster) Subscribed(string, string)   {}
func (*unconfirmedCluster) Unsubscribed(string, string) {}
func (*unconfirmedCluster) Claim(string) error          { return nil }
func (u *unconfirmedCluster) Forward(m *Message) (int, func() error) {
	if m.QoS == 0 {
		return 1, nil
	}
	failed := u.fail.Load()
	return 1, func() error {
		if failed {
			return errors.New("injected: forward timeout")
		}
		return nil
	}
}

// A publish the cluster did not confirm in time is neither acknowledged
// nor refused (the other nodes may still deliver it): DISCONNECT 0x80
// (3.1.1: a close). The QoS 2 id stays in the persistent session, so the
// DUP resend on the same node is answered without routing it again.
func TestForwardUnconfirmedOutcomeUnknown(t *testing.T) {
	t.Parallel()
	for _, v := range []packet.Version{packet.V5, packet.V311} {
		t.Run(fmt.Sprint("v", v), func(t *testing.T) {
			cl := &unconfirmedCluster{}
			_, addr := startServer(t, Options{Cluster: cl})
			sub := dial(t, addr, packet.V5)
			sub.Connect(&packet.Connect{ClientID: "sub", CleanStart: true})
			sub.Subscribe("t", 2)
			checkUnknownOutcomes(t, addr, v, sub, cl.fail.Store)
		})
	}
}

// expectOnce reads sub until a marker it publishes itself comes back,
// and checks payload was delivered exactly once before it. It completes
// each QoS 1 and 2 delivery's exchange as it reads.
func expectOnce(t *testing.T, sub *mqtttest.Client, payload string) {
	t.Helper()
	sub.Send(&packet.Publish{Topic: "t", Payload: []byte("marker")})
	n := 0
	for {
		p, err := sub.Read(5 * time.Second)
		if err != nil {
			t.Fatalf("marker not received (%q seen %d times): %v", payload, n, err)
		}
		switch m := p.(type) {
		case *packet.Publish:
			acknowledge(sub, m)
			switch string(m.Payload) {
			case payload:
				n++
			case "marker":
				if n != 1 {
					t.Fatalf("%q delivered %d times, want once", payload, n)
				}
				return
			}
		case *packet.Pubrel:
			sub.Send(&packet.Pubcomp{PacketID: m.PacketID})
		}
	}
}

// acknowledge answers m as a subscriber does: PUBACK for QoS 1, PUBREC
// for QoS 2 (the server's PUBREL then comes as the next packet read).
func acknowledge(sub *mqtttest.Client, m *packet.Publish) {
	switch m.QoS {
	case 1:
		sub.Send(&packet.Puback{PacketID: m.PacketID})
	case 2:
		sub.Send(&packet.Pubrec{PacketID: m.PacketID})
	}
}
