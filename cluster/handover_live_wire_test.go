package cluster

import (
	"slices"
	"testing"

	"github.com/roost-mqtt/roost/broker"
)

// TestMoveCut walks the cut of a live move through pick and onBarrier:
// the old owner's copy takes a node's messages until that node's barrier;
// the new owner holds them from the barrier until it adopts the session,
// then takes them directly, skipping those still coming from before a
// barrier it waits for.
func TestMoveCut(t *testing.T) {
	mv := newLiveMoves(&Node{})
	gets := func(origin, id string) bool {
		p := mv.pick(origin, &broker.RemoteMessage{Topic: "a/b"})
		return p == nil || p(id)
	}
	// Old owner: "s" handed over; X's barrier came, Y's not yet.
	mv.startOut("s", 7)
	mv.onBarrier("X", encodeBarrier("s", 7))
	mv.onBarrier("Y", encodeBarrier("s", 6)) // another move's: ignored
	if gets("X", "s") || !gets("Y", "s") || !gets("X", "other") {
		t.Fatal("old owner: X's messages must skip s after X's barrier, Y's not; other sessions untouched")
	}
	mv.endOut("s", 7)

	// New owner: "n" arriving from A; X's barrier came.
	mi := &moveIn{epoch: 3, from: "A", filters: []string{"a/#"}, seen: map[string]bool{}, want: []string{"A", "X"}}
	mv.in["n"] = mi
	mv.active.Add(1)
	mv.onBarrier("X", encodeBarrier("n", 3))
	if gets("X", "n") || gets("A", "n") {
		t.Fatal("new owner before adoption: n gets nothing directly")
	}
	if len(mi.held) != 1 {
		t.Fatalf("held %d messages, want 1 (X's, after its barrier)", len(mi.held))
	}
	mi.adopted = true
	if !gets("X", "n") || gets("A", "n") {
		t.Fatal("new owner after adoption: X's messages reach n, A's (before its barrier) do not")
	}
	mv.onBarrier("A", encodeBarrier("n", 3))
	if _, ok := mv.in["n"]; ok || mv.active.Load() != 0 {
		t.Fatal("the move is not over once every barrier came")
	}
	if !gets("A", "n") {
		t.Fatal("after the move, A's messages reach n")
	}
}

// TestBarrierRequestRoundTrip: the request's fields come back; garbage is
// refused.
func TestBarrierRequestRoundTrip(t *testing.T) {
	q := &barrierRequest{id: "c/1", epoch: 9, from: "n1", to: "n2", inc: "abc", version: 42, want: []string{"n2", "n3"}}
	got, err := decodeBarrierRequest(q.encode())
	if err != nil || got.id != q.id || got.epoch != q.epoch || got.from != q.from || got.to != q.to ||
		got.inc != q.inc || got.version != q.version || !slices.Equal(got.want, q.want) {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	for _, b := range [][]byte{nil, {wireVersion}, {wireVersion, 5, 'a'}, append(q.encode()[:len(q.encode())-2], 0xFF)} {
		if _, err := decodeBarrierRequest(b); err == nil {
			t.Errorf("decodeBarrierRequest(%x) accepted", b)
		}
	}
	if _, _, err := decodeBarrier([]byte{barrierMark, 3, 'a'}); err == nil {
		t.Error("a truncated barrier was accepted")
	}
}
