package cluster

import (
	"slices"
	"testing"

	"github.com/roost-mqtt/roost/broker"
)

// A claim back takes its disowned copy's exchange steps into the record
// it read (copysteps.go): a delivery both have gets the copy's packet id
// and PUBREC state; one the copy completed goes only when the copy got its
// Origin (a QoS 1 message, matched by content only, stays: a duplicate,
// never a loss); of the copy's later messages, a QoS 2 one it sent is
// added with its packet id (its kept copy would go out under another),
// the others are left to the held reads; Seen gains what the copy
// finished or added, not what it still queues.
func TestMergeSteps(t *testing.T) {
	msg := func(payload string, qos2 bool, nonce uint64) *broker.Message {
		m := &broker.Message{Topic: "t", Payload: []byte(payload), From: "pub"}
		if qos2 {
			m.SetOrigin(broker.Origin{ClientID: "pub", PacketID: uint16(nonce), Nonce: nonce})
		}
		return m
	}
	m1, m2, m3, q1, q2, late := msg("m1", true, 1), msg("m2", true, 2), msg("m3", true, 3), msg("q1", false, 0), msg("q2", false, 0), msg("late", true, 9)
	h := func(m *broker.Message) uint64 { return m.Origin().Hash() }
	rec := &broker.StoredSession{ClientID: "c",
		Queue: []broker.StoredDelivery{
			{Seq: 1, Msg: m1, QoS: 2, PacketID: 11}, // completed on the copy
			{Seq: 2, Msg: m2, QoS: 2, PacketID: 12}, // PUBREC'd on the copy
			{Seq: 3, Msg: m3, QoS: 2},               // sent on the copy after the disown
			{Seq: 4, Msg: q1, QoS: 1, PacketID: 14}, // PUBACK'd on the copy: no Origin, stays
			{Seq: 5, Msg: q2, QoS: 1},               // untouched
		},
		Inbound: []uint16{7, 8},
		Seen:    []uint64{h(m1), h(m2), h(m3)},
	}
	cp := &broker.StoredSession{ClientID: "c",
		Queue: []broker.StoredDelivery{
			{Seq: 2, Msg: m2, QoS: 2, PacketID: 12, Released: true},
			{Seq: 3, Msg: m3, QoS: 2, PacketID: 13},
			{Seq: 5, Msg: q2, QoS: 1},
			{Seq: 6, Msg: late, QoS: 2, PacketID: 16},
		},
		Inbound: []uint16{8, 9},
		Seen:    []uint64{h(m1), h(m2), h(m3), h(late), 42},
	}
	changed, dropped, added := mergeSteps(rec, cp, false)
	if changed != 2 || dropped != 1 || added != 1 {
		t.Errorf("changed %d, dropped %d, added %d; want 2, 1, 1", changed, dropped, added)
	}
	want := []broker.StoredDelivery{
		{Seq: 2, Msg: m2, QoS: 2, PacketID: 12, Released: true},
		{Seq: 3, Msg: m3, QoS: 2, PacketID: 13},
		{Seq: 4, Msg: q1, QoS: 1, PacketID: 14},
		{Seq: 5, Msg: q2, QoS: 1},
		{Seq: 6, Msg: late, QoS: 2, PacketID: 16}, // sent by the copy after the disown
	}
	if !slices.EqualFunc(rec.Queue, want, func(a, b broker.StoredDelivery) bool {
		return a.Seq == b.Seq && a.Msg == b.Msg && a.PacketID == b.PacketID && a.Released == b.Released
	}) {
		t.Errorf("queue %+v, want %+v", rec.Queue, want)
	}
	if sameInbound(rec, cp) {
		t.Error("inbound ids 7, 8 and 8, 9 taken for the same")
	}
	if got := finishedSeen(rec.Seen, cp); !slices.Equal(got, []uint64{h(m1), h(m2), h(m3), h(late), 42}) {
		t.Errorf("seen %v: want the record's, the late one (taken, in flight) and 42 (finished on the copy)", got)
	}
	// One the copy took after the disown and has not sent (or QoS 1) is
	// left to the held reads, its Origin out of Seen.
	rec = &broker.StoredSession{}
	cp = &broker.StoredSession{Queue: []broker.StoredDelivery{{Seq: 6, Msg: late, QoS: 2}, {Seq: 7, Msg: q1, QoS: 1, PacketID: 4}}, Seen: []uint64{h(late)}}
	if _, _, added := mergeSteps(rec, cp, false); added != 0 || len(rec.Queue) != 0 {
		t.Errorf("added %d, queue %+v: want none", added, rec.Queue)
	}
	if got := finishedSeen(nil, cp); len(got) != 0 {
		t.Errorf("seen %v: want none (queued, unsent)", got)
	}
	// The copy completed a QoS 1 message (it stays) and sent another
	// under its packet id: the stale one is sent again under a new id.
	rec = &broker.StoredSession{Queue: []broker.StoredDelivery{{Seq: 1, Msg: q1, QoS: 1, PacketID: 5}, {Seq: 2, Msg: m3, QoS: 2}}}
	cp = &broker.StoredSession{Queue: []broker.StoredDelivery{{Seq: 2, Msg: m3, QoS: 2, PacketID: 5}}}
	if changed, dropped, _ := mergeSteps(rec, cp, false); changed != 2 || dropped != 0 || rec.Queue[0].PacketID != 0 || rec.Queue[1].PacketID != 5 {
		t.Errorf("a packet id given again: changed %d, dropped %d, queue %+v", changed, dropped, rec.Queue)
	}
	// A copy numbered otherwise (not the record's own: a QoS 1 message
	// under another number) changes nothing and drops nothing.
	rec = &broker.StoredSession{Queue: []broker.StoredDelivery{{Seq: 1, Msg: q1, QoS: 1}}}
	cp = &broker.StoredSession{Queue: []broker.StoredDelivery{{Seq: 7, Msg: q1, QoS: 1, PacketID: 3}}}
	if changed, dropped, _ := mergeSteps(rec, cp, false); changed != 0 || dropped != 0 || len(rec.Queue) != 1 || rec.Queue[0].PacketID != 0 {
		t.Errorf("another numbering: changed %d, dropped %d, queue %+v", changed, dropped, rec.Queue)
	}
}

// A claim here that replaces this node's own copy (never disowned) takes
// every delivery the copy got after the record was read, whatever its
// QoS or state (nothing was kept for them), but not one whose Origin the
// record got: the record's owner completed it (ownCopySteps; test/jepsen
// TestClusterFull seed 534, TestReproOwnCopyReplaced).
func TestMergeStepsOwnCopy(t *testing.T) {
	msg := func(payload string, nonce uint64) *broker.Message {
		m := &broker.Message{Topic: "t", Payload: []byte(payload), From: "pub"}
		if nonce != 0 {
			m.SetOrigin(broker.Origin{ClientID: "pub", PacketID: uint16(nonce), Nonce: nonce})
		}
		return m
	}
	a, b, done, q1, q2 := msg("a", 1), msg("b", 2), msg("done", 3), msg("q1", 0), msg("q2", 0)
	h := func(m *broker.Message) uint64 { return m.Origin().Hash() }
	rec := &broker.StoredSession{ClientID: "c",
		Queue: []broker.StoredDelivery{{Seq: 1, Msg: a, QoS: 2}, {Seq: 2, Msg: q1, QoS: 1}},
		Seen:  []uint64{h(a), h(done)},
	}
	cp := &broker.StoredSession{ClientID: "c",
		Queue: []broker.StoredDelivery{
			{Seq: 1, Msg: a, QoS: 2, PacketID: 3},
			{Seq: 2, Msg: q1, QoS: 1},
			{Seq: 3, Msg: b, QoS: 2},               // got after the read, unsent
			{Seq: 4, Msg: q2, QoS: 1, PacketID: 4}, // got after the read, sent
			{Seq: 5, Msg: done, QoS: 2},            // completed by the record's owner
		},
		Seen: []uint64{h(a), h(b)},
	}
	changed, dropped, added, _ := takeSteps(rec, cp, true)
	if changed != 1 || dropped != 0 || added != 2 {
		t.Errorf("changed %d, dropped %d, added %d; want 1, 0, 2", changed, dropped, added)
	}
	want := []broker.StoredDelivery{
		{Seq: 1, Msg: a, QoS: 2, PacketID: 3},
		{Seq: 2, Msg: q1, QoS: 1},
		{Seq: 3, Msg: b, QoS: 2},
		{Seq: 4, Msg: q2, QoS: 1, PacketID: 4},
	}
	if !slices.EqualFunc(rec.Queue, want, func(x, y broker.StoredDelivery) bool {
		return x.Seq == y.Seq && x.Msg == y.Msg && x.PacketID == y.PacketID
	}) {
		t.Errorf("queue %+v, want %+v", rec.Queue, want)
	}
	// A disowned copy's (copySteps) later messages, unsent or QoS 1, are
	// left to the held reads as before.
	rec = &broker.StoredSession{}
	cp = &broker.StoredSession{Queue: []broker.StoredDelivery{{Seq: 3, Msg: b, QoS: 2}, {Seq: 4, Msg: q2, QoS: 1, PacketID: 4}}}
	if _, _, added := mergeSteps(rec, cp, false); added != 0 {
		t.Errorf("a disowned copy's: added %d, want 0", added)
	}
}
