package cluster

import (
	"reflect"
	"testing"

	"github.com/roost-mqtt/roost/broker"
)

// TestReplayKeepsOrigins: a session read back from its stream knows which
// QoS 2 ids are not confirmed routed (their nonce), and the Origins it got
// (those of its last SessionPut and of every queued message since, ended
// or not), so that a publisher's resend does not reach it twice.
func TestReplayKeepsOrigins(t *testing.T) {
	o1 := broker.Origin{ClientID: "p", PacketID: 1, Nonce: 11}
	o2 := broker.Origin{ClientID: "p", PacketID: 2, Nonce: 22}
	m1, m2 := msg("a", "one", 2), msg("a", "two", 2)
	m1.SetOrigin(o1)
	m2.SetOrigin(o2)
	ops := []broker.Op{
		{Kind: broker.OpSessionPut, Session: broker.StoredSession{Expiry: 600, Seen: []uint64{5, 6}}},
		{Kind: broker.OpInboundPut, PacketID: 3, Nonce: 33}, // routing not confirmed
		{Kind: broker.OpInboundPut, PacketID: 4, Nonce: 44},
		{Kind: broker.OpInboundPut, PacketID: 4}, // confirmed
		{Kind: broker.OpQueuePut, Delivery: broker.StoredDelivery{Seq: 1, Msg: m1, QoS: 2}},
		{Kind: broker.OpQueueDel, Delivery: broker.StoredDelivery{Seq: 1}},
		{Kind: broker.OpQueuePut, Delivery: broker.StoredDelivery{Seq: 2, Msg: m2, QoS: 2}},
	}
	rec := replayOf(t, "c", ops, make([]uint64, len(ops))).session()
	if rec == nil {
		t.Fatal("no session")
	}
	if !reflect.DeepEqual(rec.Inbound, []uint16{3, 4}) {
		t.Errorf("inbound %v, want [3 4]", rec.Inbound)
	}
	if want := []broker.InboundIntent{{PacketID: 3, Nonce: 33}}; !reflect.DeepEqual(rec.Unrouted, want) {
		t.Errorf("unrouted %v, want %v", rec.Unrouted, want)
	}
	if want := []uint64{5, 6, o1.Hash(), o2.Hash()}; !reflect.DeepEqual(rec.Seen, want) {
		t.Errorf("seen %v, want %v", rec.Seen, want)
	}
	if len(rec.Queue) != 1 || rec.Queue[0].Msg.Origin() != o2 {
		t.Errorf("queue %+v: want the message with origin %+v", rec.Queue, o2)
	}
}

// TestOriginsTravel: the forwarded form, a held message and a handed-over
// session carry what a resend's routing needs.
func TestOriginsTravel(t *testing.T) {
	o := broker.Origin{ClientID: "pub", PacketID: 65535, Nonce: 1<<64 - 1}
	m := msg("t/x", "p", 2)
	pub, err := encodePublish(m)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		o    broker.Origin
	}{{"with", o}, {"without", broker.Origin{}}} {
		rm, err := decodeForward(encodeForwardOrigin(m, []string{"g\x00t/#"}, pub, tc.o))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if rm.Origin != tc.o || string(rm.Payload) != "p" || !reflect.DeepEqual(rm.Groups, []string{"g\x00t/#"}) {
			t.Errorf("%s origin: got %+v", tc.name, rm)
		}
	}
	_, rm, err := decodeHeld(encodeHeld(originKey{"n1", "i", 7}, encodeForwardOrigin(m, nil, pub, o)))
	if err != nil || rm.Origin != o {
		t.Errorf("held: %+v, %v", rm, err)
	}
	q := msg("t/x", "queued", 2)
	q.SetOrigin(o)
	rec := &broker.StoredSession{ClientID: "c", Expiry: 10, Inbound: []uint16{1, 2},
		Unrouted: []broker.InboundIntent{{PacketID: 2, Nonce: 9}}, Seen: []uint64{3, 4},
		Queue: []broker.StoredDelivery{{Msg: q, QoS: 2}}}
	b, err := encodeSession(rec, "")
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeSession("c", b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Unrouted, rec.Unrouted) || !reflect.DeepEqual(got.Seen, rec.Seen) ||
		len(got.Queue) != 1 || got.Queue[0].Msg.Origin() != o {
		t.Errorf("handed over: %+v", got)
	}
}

// TestResendFlagTravels: a forward's resend bit (flags bit 4) reads as
// RemoteMessage.Resent with an Origin, and is ignored without one; a
// first routing's forward does not carry it.
func TestResendFlagTravels(t *testing.T) {
	o := broker.Origin{ClientID: "pub", PacketID: 7, Nonce: 9}
	m := msg("t/x", "p", 2)
	pub, err := encodePublish(m)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		o         broker.Origin
		bit, want bool
	}{{"first routing", o, false, false}, {"resend", o, true, true}, {"no origin", broker.Origin{}, true, false}} {
		b := encodeForwardOrigin(m, []string{"g\x00t/#"}, pub, tc.o)
		if b[1]&16 != 0 {
			t.Errorf("%s: a message not resent was encoded with the resend bit", tc.name)
		}
		if tc.bit {
			b[1] |= 16
		}
		rm, err := decodeForward(b)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if rm.Resent != tc.want || rm.Origin != tc.o {
			t.Errorf("%s: Resent %v, Origin %+v; want %v, %+v", tc.name, rm.Resent, rm.Origin, tc.want, tc.o)
		}
	}
}
