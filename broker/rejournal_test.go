package broker

import (
	"testing"

	"github.com/roost-mqtt/roost/packet"
)

// TestRejournalMessage: a session that has a message queued journals
// that copy again, under the sequence it has in the store, and says so with the
// op's ticket; one that does not has nothing journalled. A cluster asks
// before it takes a held copy as delivered: a restarted node's restored
// copy may be in its own store only (cluster TestReproRestoredLocalCopy).
func TestRejournalMessage(t *testing.T) {
	t.Parallel()
	st := &idLog{}
	s, _ := startServer(t, Options{Store: st})
	s.Adopt(&StoredSession{ClientID: "rj", Expiry: 600,
		Subs:  []StoredSub{{Filter: "t/#", Opts: packet.SubOptions{QoS: 2}}},
		Queue: []StoredDelivery{{Seq: 7, QoS: 2, Msg: &Message{From: "p", Topic: "t/a", Payload: []byte("m"), QoS: 2}}}})
	// The adoption journals the queue under sequences of its own.
	st.mu.Lock()
	before := len(st.ops)
	var seq uint64
	for _, op := range st.ops {
		if op.Kind == OpQueuePut && string(op.Delivery.Msg.Payload) == "m" {
			seq = op.Delivery.Seq
		}
	}
	st.mu.Unlock()
	if seq == 0 {
		t.Fatal("the adoption journalled no QueuePut of m")
	}
	if has, tk := s.RejournalMessage("rj", "p", "t/a", []byte("other")); has || tk != 0 {
		t.Fatalf("a message the session lacks: has %v, ticket %d; want false, 0", has, tk)
	}
	has, tk := s.RejournalMessage("rj", "p", "t/a", []byte("m"))
	if !has || tk == 0 {
		t.Fatalf("the queued message: has %v, ticket %d; want true and the op's ticket", has, tk)
	}
	st.mu.Lock()
	ops := st.ops[before:]
	st.mu.Unlock()
	if len(ops) != 1 || ops[0].Kind != OpQueuePut || ops[0].ClientID != "rj" || ops[0].Delivery.Seq != seq ||
		string(ops[0].Delivery.Msg.Payload) != "m" || ops[0].Delivery.QoS != 2 {
		t.Fatalf("ops journalled: %+v; want one QueuePut of rj's m under sequence %d", ops, seq)
	}
	if !s.HasMessage("rj", "p", "t/a", []byte("m")) {
		t.Error("HasMessage: the queued message not found")
	}
}
