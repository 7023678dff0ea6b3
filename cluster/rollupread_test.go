package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/eventually"
	"github.com/roost-mqtt/roost/packet"
)

// TestReadAcrossRollup: a read of a session's subject that began before a
// rollup and goes on after it (a replica replaying its log after a
// restart is such a read: it holds the subject's older ops for a while,
// and removes them again as it replays the rollup) is given the older
// ops up to some point, none after it (the rollup's purge took them
// before the consumer got there), then the rollup. The record read must
// be the rollup's: a QoS 2 delivery its client completed before the
// rollup, whose completion the read never got, must not come back (test/
// jepsen TestClusterFull seed 48: g0m1 got pub0#313 twice).
//
// On a real stream (of one replica, on three engines, so that the purge
// is in place when the read goes on): the older owner's delivery of m1 and its PUBREC, read;
// the rollup of the newer owner, stored; the read goes on.
func TestReadAcrossRollup(t *testing.T) {
	t.Parallel()
	js := startReadEngines(t, 3)[0]
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	const stream, subj = "ROLLREAD", "rr.c.x"
	eventually.NoError(t, 30*time.Second, func() error {
		actx, acancel := context.WithTimeout(ctx, 5*time.Second)
		defer acancel()
		_, err := js.CreateOrUpdateStream(actx, jetstream.StreamConfig{Name: stream, Subjects: []string{"rr.>"},
			Replicas: 1, Storage: jetstream.FileStorage, AllowRollup: true})
		return err
	})
	m1 := msg("t/1", "m1", 2)
	sub := broker.StoredSub{Filter: "t/#", Opts: packet.SubOptions{QoS: 2}}
	put := func(ops []broker.Op, epoch uint64, rollup bool) {
		t.Helper()
		reps := make([]repOp, len(ops))
		epochs := make([]uint64, len(ops))
		for i := range ops {
			body, err := encodeOpBody(&ops[i], "")
			if err != nil {
				t.Fatal(err)
			}
			reps[i], epochs[i] = repOp{id: "x", kind: ops[i].Kind, body: body}, epoch
		}
		m := nats.NewMsg(subj)
		m.Data = appendPack(nil, reps, epochs)
		if rollup {
			m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
		}
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	// The older owner (epoch 1): m1 sent under packet id 7, its PUBREC
	// (released), its PUBCOMP (deleted).
	put([]broker.Op{
		{Kind: broker.OpSessionPut, Session: broker.StoredSession{Expiry: 60}},
		{Kind: broker.OpSubPut, Sub: sub},
		{Kind: broker.OpQueuePut, Delivery: broker.StoredDelivery{Seq: 1, Msg: m1, QoS: 2, PacketID: 7}},
	}, 1, false)
	put([]broker.Op{{Kind: broker.OpQueuePut, Delivery: broker.StoredDelivery{Seq: 1, Msg: m1, QoS: 2, PacketID: 7, Released: true}}}, 1, false)
	put([]broker.Op{{Kind: broker.OpQueueDel, Delivery: broker.StoredDelivery{Seq: 1}}}, 1, false)

	cons, err := js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{FilterSubject: subj,
		AckPolicy: jetstream.AckNonePolicy, MemoryStorage: true, InactiveThreshold: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	r := newReplay("x")
	var read []uint64
	fetch := func(n int) {
		t.Helper()
		batch, err := cons.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			md, err := m.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			read = append(read, md.Sequence.Stream)
			if err := r.applyStored(m); err != nil {
				t.Fatal(err)
			}
		}
		if err := batch.Error(); err != nil {
			t.Fatal(err)
		}
	}
	fetch(2) // m1's delivery and PUBREC, as a replica behind had them

	// The newer owner (epoch 2) adopted the session, m1 completed: its
	// rollup removes the older ops, m1's PUBCOMP among them, unread.
	put([]broker.Op{
		{Kind: broker.OpSessionPut, Session: broker.StoredSession{Expiry: 60}},
		{Kind: broker.OpSubPut, Sub: sub},
	}, 2, true)
	fetch(1)

	if want := []uint64{1, 2, 4}; len(read) != len(want) || read[0] != want[0] || read[1] != want[1] || read[2] != want[2] {
		t.Fatalf("the read got stream messages %v, want %v (the PUBCOMP's, 3, removed by the rollup before it was read)", read, want)
	}
	rec := r.session()
	if rec == nil || len(rec.Subs) != 1 {
		t.Fatalf("record read across the rollup: %s, want the rollup's session", sessionSummary(rec))
	}
	if len(rec.Queue) != 0 {
		t.Fatalf("record read across the rollup: %s; m1, completed before the rollup, would be sent again", sessionSummary(rec))
	}
	if r.passed != 2 {
		t.Errorf("messages left out before the rollup: %d, want 2", r.passed)
	}
}
