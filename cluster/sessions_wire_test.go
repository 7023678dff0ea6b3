package cluster

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/packet"
)

func msg(topic, payload string, qos packet.QoS) *broker.Message {
	return &broker.Message{Topic: topic, Payload: []byte(payload), QoS: qos}
}

// replayOf encodes ops at their epochs and replays them.
func replayOf(t *testing.T, id string, ops []broker.Op, epochs []uint64) *replay {
	t.Helper()
	r := newReplay(id)
	for i := range ops {
		b, err := encodeOp(&ops[i], epochs[i])
		if err != nil {
			t.Fatalf("op %d: %v", i, err)
		}
		if err := r.apply(b); err != nil {
			t.Fatalf("op %d: %v", i, err)
		}
	}
	return r
}

// TestReplayRebuildsSession: every kind of op, in the order the broker
// journals them, gives back the session: subscriptions, the queue in seq
// order with inflight packet ids and PUBREC state, inbound QoS 2 ids, the
// will with its delay.
func TestReplayRebuildsSession(t *testing.T) {
	at := time.UnixMilli(1_800_000_000_000)
	ops := []broker.Op{
		{Kind: broker.OpSessionPut, Session: broker.StoredSession{Expiry: 600, Will: msg("w", "gone", 1), WillDelay: 2 * time.Second}},
		{Kind: broker.OpSubPut, Sub: broker.StoredSub{Filter: "a/#", Opts: packet.SubOptions{QoS: 2, NoLocal: true, RetainHandling: 2}, ID: 7}},
		{Kind: broker.OpSubPut, Sub: broker.StoredSub{Filter: "$share/g/b", Opts: packet.SubOptions{QoS: 1}}},
		{Kind: broker.OpSubPut, Sub: broker.StoredSub{Filter: "gone/+", Opts: packet.SubOptions{QoS: 0}}},
		{Kind: broker.OpSubDel, Sub: broker.StoredSub{Filter: "gone/+"}},
		{Kind: broker.OpQueuePut, Delivery: broker.StoredDelivery{Seq: 2, Msg: msg("a/x", "two", 2), QoS: 2, SubIDs: []uint32{7}}},
		{Kind: broker.OpQueuePut, Delivery: broker.StoredDelivery{Seq: 1, Msg: msg("a/x", "one", 1), QoS: 1}},
		{Kind: broker.OpQueuePut, Delivery: broker.StoredDelivery{Seq: 3, Msg: msg("a/x", "done", 1), QoS: 1}},
		{Kind: broker.OpQueueDel, Delivery: broker.StoredDelivery{Seq: 3}},
		{Kind: broker.OpQueuePut, Delivery: broker.StoredDelivery{Seq: 2, Msg: msg("a/x", "two", 2), QoS: 2, SubIDs: []uint32{7}, PacketID: 9, Released: true}},
		{Kind: broker.OpInboundPut, PacketID: 4},
		{Kind: broker.OpInboundPut, PacketID: 5},
		{Kind: broker.OpInboundDel, PacketID: 4},
		{Kind: broker.OpSessionPut, Session: broker.StoredSession{Expiry: 900, DisconnectedAt: at, Will: msg("w", "gone", 1), WillAt: at.Add(2 * time.Second), WillDelay: 2 * time.Second}},
	}
	rec := replayOf(t, "c1", ops, make([]uint64, len(ops))).session()
	if rec == nil {
		t.Fatal("no session")
	}
	if rec.ClientID != "c1" || rec.Expiry != 900 || !rec.DisconnectedAt.Equal(at) || !rec.WillAt.Equal(at.Add(2*time.Second)) ||
		rec.WillDelay != 2*time.Second || rec.Will == nil || string(rec.Will.Payload) != "gone" {
		t.Errorf("session fields: %+v", rec)
	}
	wantSubs := []broker.StoredSub{ops[2].Sub, ops[1].Sub}
	if !reflect.DeepEqual(rec.Subs, wantSubs) {
		t.Errorf("subs %+v, want %+v", rec.Subs, wantSubs)
	}
	if len(rec.Queue) != 2 || rec.Queue[0].Seq != 1 || rec.Queue[1].Seq != 2 || rec.Queue[1].PacketID != 9 ||
		!rec.Queue[1].Released || rec.Queue[1].QoS != 2 || !reflect.DeepEqual(rec.Queue[1].SubIDs, []uint32{7}) ||
		string(rec.Queue[0].Msg.Payload) != "one" || rec.Queue[0].Msg.Topic != "a/x" {
		t.Errorf("queue %+v", rec.Queue)
	}
	if !reflect.DeepEqual(rec.Inbound, []uint16{5}) {
		t.Errorf("inbound %v", rec.Inbound)
	}
}

// TestReplaySkipsStaleOwner: ops a node writes after another node claimed
// the id at a newer epoch (it was paused) do not change the session; a
// SessionDel ends it and a later SessionPut starts a new one.
func TestReplaySkipsStaleOwner(t *testing.T) {
	ops := []broker.Op{
		{Kind: broker.OpSessionPut, Session: broker.StoredSession{Expiry: 60}},
		{Kind: broker.OpQueuePut, Delivery: broker.StoredDelivery{Seq: 1, Msg: msg("t", "kept", 1), QoS: 1}},
		{Kind: broker.OpSessionPut, Session: broker.StoredSession{Expiry: 60}}, // new owner, epoch 2
		{Kind: broker.OpQueueDel, Delivery: broker.StoredDelivery{Seq: 1}},     // stale owner, epoch 1
		{Kind: broker.OpSessionDel}, // stale owner, epoch 1
		{Kind: broker.OpSubPut, Sub: broker.StoredSub{Filter: "x", Opts: packet.SubOptions{QoS: 1}}}, // new owner
	}
	r := replayOf(t, "c", ops, []uint64{1, 1, 2, 1, 1, 2})
	rec := r.session()
	if rec == nil || len(rec.Queue) != 1 || len(rec.Subs) != 1 || r.skipped != 2 {
		t.Fatalf("session %+v, skipped %d; want the queued message, the subscription, 2 skipped", rec, r.skipped)
	}
	r = replayOf(t, "c", ops[:2:2], []uint64{1, 1})
	b, _ := encodeOp(&broker.Op{Kind: broker.OpSessionDel}, 1)
	if r.apply(b); r.session() != nil {
		t.Fatal("session after SessionDel")
	}
}

func TestReplayRefusesGarbage(t *testing.T) {
	good, _ := encodeOp(&broker.Op{Kind: broker.OpSubPut, Sub: broker.StoredSub{Filter: "a"}}, 3)
	for _, b := range [][]byte{nil, {9}, {wireVersion, 99, 0}, good[:len(good)-1], append(good, 0)} {
		if err := newReplay("c").apply(b); err == nil {
			t.Errorf("apply(%x): no error", b)
		}
	}
}

// TestHandoverCarriesConnectionWill: the will of the connection just taken
// over (no due time yet) travels with its delay, for the new node to
// publish or arm.
func TestHandoverCarriesConnectionWill(t *testing.T) {
	rec := &broker.StoredSession{ClientID: "c", Expiry: 10, Will: msg("w", "bye", 1), WillDelay: 3 * time.Second}
	b, err := encodeSession(rec, "")
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeSession("c", b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Will == nil || string(got.Will.Payload) != "bye" || !got.WillAt.IsZero() || got.WillDelay != 3*time.Second {
		t.Fatalf("got %+v", got)
	}
}

// TestReplayLastOpSkipsStaleOwner: the session's last op is the last one
// applied, not a stale owner's written later (a restarted node ending its
// restored copy after another node claimed the id): the held subjects are
// read from the last op on, and the messages held between the two would
// reach the session from nobody (TestClusterFull seed 42: 93 lost).
func TestReplayLastOpSkipsStaleOwner(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ops := []struct {
		op    broker.Op
		epoch uint64
	}{
		{broker.Op{Kind: broker.OpSessionPut, Session: broker.StoredSession{Expiry: 60}}, 2},
		{broker.Op{Kind: broker.OpQueuePut, Delivery: broker.StoredDelivery{Seq: 1, Msg: msg("t", "m", 1), QoS: 1}}, 2},
		{broker.Op{Kind: broker.OpSessionDel}, 1}, // the restarted node's, its epoch older
	}
	r := newReplay("c")
	var last time.Time
	for i, o := range ops {
		b, err := encodeOp(&o.op, o.epoch)
		if err != nil {
			t.Fatal(err)
		}
		before := r.applied
		if err := r.apply(b); err != nil {
			t.Fatal(err)
		}
		last = r.lastOp(before, t0.Add(time.Duration(i)*time.Second), last)
	}
	if want := t0.Add(time.Second); !last.Equal(want) {
		t.Errorf("last op at %v, want %v (the stale owner's op counted)", last, want)
	}
	if r.session() == nil {
		t.Error("the stale SessionDel ended the session")
	}
}

// opMsg is a jetstream.Msg of a session subject: its bytes and headers.
type opMsg struct {
	jetstream.Msg
	b []byte
	h nats.Header
}

func (m opMsg) Data() []byte         { return m.b }
func (m opMsg) Headers() nats.Header { return m.h }

// An adoption's rollup sent without its purge (the id claimed elsewhere
// by then: sendEpochs' stale) starts the session afresh all the same when
// no newer owner wrote: the previous owner's ops, under its own store
// numbers, are gone as the purge would have taken them. Before, the
// previous owner's QueuePuts for q1-9 and q2-9 (numbers 21 and 22, behind
// two probes it had delivered) stayed beside the adoption's (19 and 20),
// and the next stream reader sent q2-9 twice (TestReproHandedReadLate).
// A newer owner's ops read before the unpurged adoption stand: its epoch
// is older, and it is skipped whole.
func TestReplayWholeUnpurged(t *testing.T) {
	put := func(seq uint64, payload string) broker.Op {
		return broker.Op{Kind: broker.OpQueuePut, Delivery: broker.StoredDelivery{Seq: seq, Msg: msg("t", payload, 2), QoS: 2}}
	}
	one := func(op broker.Op, epoch uint64) opMsg {
		b, err := encodeOp(&op, epoch)
		if err != nil {
			t.Fatal(err)
		}
		return opMsg{b: b, h: nats.Header{}}
	}
	// The adoption: the session whole in one pack, numbered anew.
	whole := func(epoch uint64, ops ...broker.Op) opMsg {
		reps := make([]repOp, len(ops))
		epochs := make([]uint64, len(ops))
		for i := range ops {
			body, err := encodeOpBody(&ops[i], "")
			if err != nil {
				t.Fatal(err)
			}
			reps[i], epochs[i] = repOp{id: "c", kind: ops[i].Kind, body: body}, epoch
		}
		return opMsg{b: appendPack(nil, reps, epochs), h: nats.Header{opWholeHeader: []string{"1"}}}
	}
	sess := broker.Op{Kind: broker.OpSessionPut, Session: broker.StoredSession{Expiry: 600}}
	sub := broker.Op{Kind: broker.OpSubPut, Sub: broker.StoredSub{Filter: "t", Opts: packet.SubOptions{QoS: 2}}}
	previous := []opMsg{one(sess, 1), one(sub, 1), one(put(2, "m1"), 1), one(put(3, "m2"), 1)}
	adoption := whole(2, sess, sub, put(1, "m1"), put(2, "m2"))
	newer := []opMsg{whole(3, sess, sub, put(1, "m2")), one(put(2, "m3"), 3)}
	for _, tc := range []struct {
		name string
		msgs []opMsg
		want string
	}{
		{"unpurged after the previous owner", append(slices.Clone(previous), adoption), "1:m1 2:m2"},
		{"a newer owner's ops first", append(append(slices.Clone(previous), newer...), adoption), "1:m2 2:m3"},
		{"the previous owner's later ops skipped", append(append(slices.Clone(previous), adoption), one(put(4, "m4"), 1)), "1:m1 2:m2"},
		{"without the mark, as before", append(slices.Clone(previous), opMsg{b: adoption.b, h: nats.Header{}}), "1:m1 2:m2 3:m2"},
	} {
		r := newReplay("c")
		for i, m := range tc.msgs {
			if err := r.applyMsg(m); err != nil {
				t.Fatalf("%s: message %d: %v", tc.name, i, err)
			}
		}
		rec := r.session()
		if rec == nil {
			t.Fatalf("%s: no session", tc.name)
		}
		var got []string
		for _, d := range rec.Queue {
			got = append(got, fmt.Sprintf("%d:%s", d.Seq, d.Msg.Payload))
		}
		if s := strings.Join(got, " "); s != tc.want || len(rec.Subs) != 1 {
			t.Errorf("%s: queue %q, %d subscriptions; want %q, 1", tc.name, s, len(rec.Subs), tc.want)
		}
	}
}

// TestReplayOriginOnce: a record read from the stream holds one delivery
// per Origin. Two writers' numberings of one copy meet there when a new
// owner's rollup (the export, renumbered) is followed by ops of the copy
// it was handed from, journalled again on its node at a newer claim's
// epoch: the newer op's delivery stands, and the ops after it of its
// epoch name its sequence. Before, both stood and the next claim gave the
// message twice (test/jepsen TestClusterFull long faults, seed 970 on main
// 9614108: g0m1's pub2#54 as s1 in n1's rollup and as s19 in n3's op).
// Deliveries with no Origin are as before, by sequence.
func TestReplayOriginOnce(t *testing.T) {
	named := func(seq uint64, payload string, o broker.Origin, pid uint16) broker.Op {
		m := msg("t", payload, 2)
		m.SetOrigin(o)
		return broker.Op{Kind: broker.OpQueuePut, Delivery: broker.StoredDelivery{Seq: seq, Msg: m, QoS: 2, PacketID: pid}}
	}
	a, b := broker.Origin{Nonce: 11}, broker.Origin{ClientID: "pub", PacketID: 3, Nonce: 12}
	sess := broker.Op{Kind: broker.OpSessionPut, Session: broker.StoredSession{Expiry: 600}}
	plain := broker.Op{Kind: broker.OpQueuePut, Delivery: broker.StoredDelivery{Seq: 3, Msg: msg("t", "bare", 1), QoS: 1}}
	for _, tc := range []struct {
		name   string
		ops    []broker.Op
		epochs []uint64
		want   string
	}{
		{"the rollup's, then the handed-from copy's at a newer epoch",
			[]broker.Op{sess, named(1, "a", a, 0), named(2, "b", b, 0), plain, named(19, "a", a, 7)},
			[]uint64{6, 6, 6, 6, 7}, "2:b:0 3:bare:0 19:a:7"},
		{"its later ops name the newer sequence",
			[]broker.Op{sess, named(1, "a", a, 0), named(19, "a", a, 7), {Kind: broker.OpQueueDel, Delivery: broker.StoredDelivery{Seq: 19}}},
			[]uint64{6, 6, 7, 7}, ""},
		{"a put of its own sequence updates it",
			[]broker.Op{sess, named(1, "a", a, 0), named(1, "a", a, 5)},
			[]uint64{6, 6, 6}, "1:a:5"},
		{"a sequence put again with another message",
			[]broker.Op{sess, named(4, "a", a, 0), named(4, "b", b, 0), named(5, "a", a, 0)},
			[]uint64{6, 6, 6, 6}, "4:b:0 5:a:0"},
		{"no Origin: by sequence, as before",
			[]broker.Op{sess, plain, {Kind: broker.OpQueuePut, Delivery: broker.StoredDelivery{Seq: 9, Msg: msg("t", "bare", 1), QoS: 1}}},
			[]uint64{6, 6, 7}, "3:bare:0 9:bare:0"},
	} {
		rec := replayOf(t, "c", tc.ops, tc.epochs).session()
		if rec == nil {
			t.Fatalf("%s: no session", tc.name)
		}
		var got []string
		for _, d := range rec.Queue {
			got = append(got, fmt.Sprintf("%d:%s:%d", d.Seq, d.Msg.Payload, d.PacketID))
		}
		if s := strings.Join(got, " "); s != tc.want {
			t.Errorf("%s: queue %q, want %q", tc.name, s, tc.want)
		}
	}
}
