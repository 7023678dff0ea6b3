package cluster

import (
	"errors"
	"fmt"
	"testing"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/store"
)

// Only the node's own store being out of room makes a forward held here:
// a replication backlog wraps ErrStoreFull too, and any other store
// failure, or none, is passed on untouched.
func TestSettleFullOnlyForAFullDisk(t *testing.T) {
	backlog := fmt.Errorf("%w: %d ops waiting for a quorum: %w", errNotReplicated, maxBacklog, broker.ErrStoreFull)
	full := fmt.Errorf("%w: /data has 1048576 bytes free", store.ErrNoSpace)
	other := fmt.Errorf("%w: fsync: input/output error", store.ErrWriteFailed)
	if !isDiskFull(full) {
		t.Errorf("isDiskFull(%v) = false", full)
	}
	for _, err := range []error{backlog, other, nil} {
		if isDiskFull(err) {
			t.Errorf("isDiskFull(%v) = true", err)
		}
		// Never touches the hold (nil f, no node): returned as it is.
		if got := (&Node{}).settleFull(&fullHold{}, err); !errors.Is(got, err) || (err == nil) != (got == nil) {
			t.Errorf("settleFull(%v) = %v, want it unchanged", err, got)
		}
	}
	if got := (&Node{}).settleFull(nil, full); !errors.Is(got, full) {
		t.Errorf("settleFull without a hold = %v, want %v", got, full)
	}
}

// heldOrigin reads the origin encodeHeld wrote.
func TestHeldOrigin(t *testing.T) {
	k := originKey{node: "n1", inc: "abc", id: 42}
	got, ok := heldOrigin(encodeHeld(k, []byte{wireVersion}))
	if !ok || got != k {
		t.Errorf("heldOrigin = %v, %v; want %v", got, ok, k)
	}
	if _, ok := heldOrigin([]byte{heldVersion + 1}); ok {
		t.Error("heldOrigin read another version")
	}
}

// fullHolds keeps a ticket per copy until forgotten, the larger of two.
func TestFullHolds(t *testing.T) {
	var h fullHolds
	h.note(7, 3)
	h.note(7, 2)
	if got := h.ticket(7); got != 3 {
		t.Errorf("ticket = %d, want 3", got)
	}
	h.forget(7)
	if got := h.ticket(7); got != 0 {
		t.Errorf("ticket after forget = %d, want 0", got)
	}
}
