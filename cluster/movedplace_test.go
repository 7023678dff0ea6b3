package cluster

import (
	"slices"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/packet"
)

// TestMovedLocalPlaced: the messages a session's old owner routed itself
// (its local publishes) carry their place in the queue that moves (the
// live move's export, a handover) and in the record (QueuePut ops), so
// that the new owner's catch-up puts what was held for the session of the
// same publisher, older, ahead of them. Before, they were written without
// a place (a local copy has none in memory: broker.Message.RoutedHere),
// the new owner could not anchor them, and every held one went behind the
// whole moved queue (bench/jepsen/RESULTS.md, ord31: test/jepsen
// TestClusterFull long faults seed 1123, n3's copy of ps3 with pub2#198-#201
// published on n3 queued, moved live to n1, whose catch-up read n2's holds
// of #190-#197 and put them after: "make room ... moved=93 at=2").
func TestMovedLocalPlaced(t *testing.T) {
	for _, tc := range []struct {
		name string
		move func(t *testing.T, a *Node, rec *broker.StoredSession) *broker.StoredSession
	}{
		{"handover (live move's export)", func(t *testing.T, a *Node, rec *broker.StoredSession) *broker.StoredSession {
			b, err := encodeSession(rec, a.here())
			if err != nil {
				t.Fatal(err)
			}
			got, err := decodeSession(rec.ClientID, b)
			if err != nil {
				t.Fatal(err)
			}
			return got
		}},
		{"record (QueuePut ops)", func(t *testing.T, a *Node, rec *broker.StoredSession) *broker.StoredSession {
			r := newReplay(rec.ClientID)
			ops := []broker.Op{{Kind: broker.OpSessionPut, Session: broker.StoredSession{Expiry: rec.Expiry}}}
			for _, s := range rec.Subs {
				ops = append(ops, broker.Op{Kind: broker.OpSubPut, Sub: s})
			}
			for i, d := range rec.Queue {
				d.Seq = uint64(i + 1) // as a store numbers them (no store here)
				ops = append(ops, broker.Op{Kind: broker.OpQueuePut, Delivery: d})
			}
			for i := range ops {
				body, err := encodeOpBody(&ops[i], a.here()) // as sessions.append writes them
				if err != nil {
					t.Fatal(err)
				}
				if err := r.apply(appendOp(nil, ops[i].Kind, 1, body)); err != nil {
					t.Fatal(err)
				}
			}
			return r.session()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, srvA := moveNode(t, 0)
			a.cfg.Node, a.inc = "A", "a"
			// a1 is published on A before the session is there: it stands
			// for a message of A's publisher held for the session elsewhere.
			publish := func(payload string) {
				t.Helper()
				if _, err := srvA.Publish(broker.PublishRequest{Topic: "t/1", Payload: []byte(payload), QoS: 1}); err != nil {
					t.Fatal(err)
				}
			}
			publish("a1")
			sub := broker.StoredSub{Filter: "t/#", Opts: packet.SubOptions{QoS: 1}}
			srvA.Adopt(&broker.StoredSession{ClientID: "s", Expiry: 600, Subs: []broker.StoredSub{sub}})
			publish("a2")
			publish("a3")
			rec := srvA.Export("s")
			if rec == nil || len(rec.Queue) != 2 {
				t.Fatalf("exported %+v, want a session with a2 and a3 queued", rec)
			}
			a1 := originKey{"A", "a", rec.Queue[0].Msg.ID - 1} // its id on A: the one before a2's

			moved := tc.move(t, a, rec)
			for _, d := range moved.Queue {
				if want := (originKey{"A", "a", 0}).place().Source; d.Msg.Place().Source != want {
					t.Errorf("%s moved with place %+v, want source %q", d.Msg.Payload, d.Msg.Place(), want)
				}
			}
			b, srvB := moveNode(t, 0)
			srvB.Adopt(moved)
			done := b.catchUp("s", time.Minute, func() {}, nil)
			// The read of what was held for the session brings a1
			// (deliverHeldTo: its origin's place, Late).
			srvB.DeliverRemote(&broker.RemoteMessage{Topic: "t/1", Payload: []byte("a1"), QoS: 1, Pick: func(string) bool { return true },
				Accepted: true, Place: a1.place(), Late: true})
			done()
			out := srvB.Export("s")
			if out == nil {
				t.Fatal("no session to export on the new owner")
			}
			var order []string
			for _, d := range out.Queue {
				order = append(order, string(d.Msg.Payload))
			}
			if want := []string{"a1", "a2", "a3"}; !slices.Equal(order, want) {
				t.Errorf("new owner's queue %q, want %q (the held a1 ahead of its publisher's newer ones)", order, want)
			}
		})
	}
}
