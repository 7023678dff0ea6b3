package store

import (
	"slices"
	"testing"

	"github.com/roost-mqtt/roost/broker"
)

// TestOriginKeptPastDelivery: the Origin of a delivery stays among the
// session's Seen after the delivery's deletion (its client completed a
// QoS 2 message), across a reopen, until a session record carries it;
// then the record's list stands alone. Memory and disk alike.
func TestOriginKeptPastDelivery(t *testing.T) {
	t.Parallel()
	o := broker.Origin{Nonce: 77} // a cluster copy's name: no client id
	m := &broker.Message{ID: 1, Topic: "t", Payload: []byte("m"), QoS: 2}
	m.SetOrigin(o)
	ops := []broker.Op{
		{Kind: broker.OpSessionPut, ClientID: "c", Session: broker.StoredSession{ClientID: "c", Expiry: 60, Seen: []uint64{5}}},
		{Kind: broker.OpQueuePut, ClientID: "c", Delivery: broker.StoredDelivery{Seq: 1, Msg: m, QoS: 2, PacketID: 1}},
		{Kind: broker.OpQueuePut, ClientID: "c", Delivery: broker.StoredDelivery{Seq: 1, Msg: m, QoS: 2, PacketID: 1, Released: true}},
		{Kind: broker.OpQueueDel, ClientID: "c", Delivery: broker.StoredDelivery{Seq: 1}},
	}
	again := broker.Op{Kind: broker.OpSessionPut, ClientID: "c", Session: broker.StoredSession{ClientID: "c", Expiry: 60, Seen: []uint64{5, o.Hash()}}}
	seen := func(st *broker.StoredState) []uint64 {
		if len(st.Sessions) != 1 || len(st.Sessions[0].Queue) != 0 {
			t.Fatalf("state %+v, want session c with an empty queue", st.Sessions)
		}
		return st.Sessions[0].Seen
	}
	mem := NewMemory()
	mem.Append(ops...)
	st, _ := mem.Load()
	if got := seen(st); !slices.Equal(got, []uint64{5, o.Hash()}) {
		t.Errorf("memory: seen %v, want [5 %d]", got, o.Hash())
	}
	mem.Append(again)
	if st, _ = mem.Load(); !slices.Equal(seen(st), again.Session.Seen) {
		t.Errorf("memory after the record: seen %v, want %v", seen(st), again.Session.Seen)
	}

	dir := t.TempDir()
	reopen := func(d *Disk, ops ...broker.Op) ([]uint64, *Disk) {
		t.Helper()
		if err := d.Wait(d.Append(ops...)); err != nil {
			t.Fatal(err)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		d = openT(t, dir, DiskOptions{})
		t.Cleanup(func() { d.Close() })
		st, err := d.Load()
		if err != nil {
			t.Fatal(err)
		}
		return seen(st), d
	}
	d := openT(t, dir, DiskOptions{})
	if _, err := d.Load(); err != nil {
		t.Fatal(err)
	}
	got, d := reopen(d, ops...)
	if !slices.Equal(got, []uint64{5, o.Hash()}) {
		t.Errorf("disk: seen %v, want [5 %d]", got, o.Hash())
	}
	if got, _ = reopen(d, again); !slices.Equal(got, again.Session.Seen) {
		t.Errorf("disk after the record: seen %v, want %v (its kept Origins dropped)", got, again.Session.Seen)
	}
}
