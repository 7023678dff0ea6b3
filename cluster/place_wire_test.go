package cluster

import (
	"bytes"
	"testing"

	"github.com/roost-mqtt/roost/broker"
)

// TestPlacesTravel: a queued message's place goes with it wherever the
// session's queue goes (place.go): its QueuePut op read back from the
// stream, the handover's queue (the live move's export has the same
// form), so that an adoption orders what was held for the session
// against its queue (broker.CatchUp; TestReproPausedOwnerMovesLive). A
// message without a place keeps the form older nodes read; one with a
// place is of wirePlaceVersion, which an older node refuses as malformed
// (it checks the version byte) rather than misreads.
func TestPlacesTravel(t *testing.T) {
	o := broker.Origin{ClientID: "pub", PacketID: 7, Nonce: 77}
	p := originKey{node: "n3", inc: "0123456789abcdef", id: 1 << 40}.place()
	placed, bare := msg("t/x", "placed", 2), msg("t/x", "bare", 1)
	placed.SetOrigin(o)
	placed.SetPlace(p)

	// The stored form.
	b, err := appendMessage(nil, placed, "")
	if err != nil {
		t.Fatal(err)
	}
	r := reader{b: b}
	fwd := []byte(r.string())
	if fwd[0] != wirePlaceVersion || fwd[0] == wireVersion {
		t.Errorf("version %d of a placed message, want %d (not %d: an older node would read it)", fwd[0], wirePlaceVersion, wireVersion)
	}
	r = reader{b: b}
	m := readMessage(&r)
	if r.err != nil || m.Place() != p || m.Origin() != o || string(m.Payload) != "placed" {
		t.Fatalf("read back %+v (err %v): place %+v origin %+v, want %+v %+v", m, r.err, m.Place(), m.Origin(), p, o)
	}
	b, err = appendMessage(nil, bare, "")
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := encodePublish(bare)
	if r = (reader{b: b}); !bytes.Equal([]byte(r.string()), encodeForward(bare, nil, pub)) {
		t.Error("a message without a place is not stored in the form an older node reads")
	}
	r = reader{b: b}
	if m := readMessage(&r); m.Place() != (broker.Place{}) {
		t.Errorf("a message stored without a place read back with %+v", m.Place())
	}

	// A QueuePut op, replayed.
	ops := []broker.Op{
		{Kind: broker.OpSessionPut, Session: broker.StoredSession{Expiry: 600}},
		{Kind: broker.OpQueuePut, Delivery: broker.StoredDelivery{Seq: 1, Msg: placed, QoS: 2}},
		{Kind: broker.OpQueuePut, Delivery: broker.StoredDelivery{Seq: 2, Msg: bare, QoS: 1}},
	}
	rec := replayOf(t, "c", ops, make([]uint64, len(ops))).session()
	if rec == nil || len(rec.Queue) != 2 {
		t.Fatalf("replayed %+v, want a session with 2 queued", rec)
	}
	if got := rec.Queue[0].Msg.Place(); got != p {
		t.Errorf("replayed place %+v, want %+v", got, p)
	}
	if got := rec.Queue[1].Msg.Place(); got != (broker.Place{}) {
		t.Errorf("replayed place of a message without one %+v", got)
	}

	// A handover's queue.
	hb, err := encodeSession(&broker.StoredSession{ClientID: "c", Expiry: 600, Queue: rec.Queue}, "")
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeSession("c", hb)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Queue) != 2 || got.Queue[0].Msg.Place() != p || got.Queue[1].Msg.Place() != (broker.Place{}) {
		t.Errorf("handed over queue %+v, want the places %+v and none", got.Queue, p)
	}

	// A place with no source is malformed.
	bad := encodeForwardPlace(bare, nil, pub, broker.Origin{}, 0, p)
	cut := bytes.Replace(bad, []byte(p.Source), nil, 1)
	cut[len(bare.From)+5] = 0 // the source's length
	if _, err := decodeForward(cut); err == nil {
		t.Error("a placed form with an empty source decoded")
	}
}
