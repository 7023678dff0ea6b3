package broker

import (
	"testing"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// TestHandOverByBoundsSettle: HandOverBy's wait for a connected client's
// last packets ends at its by, not at settleTimeout. The cluster hands a
// session over in its answer to another node's claim, which that node
// waits for only so long; the 2 s of settleTimeout after the answer's
// other waits pushed the answer past that bound, and the claimer read the
// session elsewhere while this copy still took messages. The heldConn
// keeps the old reader from settling at all.
func TestHandOverByBoundsSettle(t *testing.T) {
	t.Parallel()
	s, ln := serveHolding(t)
	inner := ln.Listener

	g := &heldConn{reached: make(chan struct{}), release: make(chan struct{})}
	defer close(g.release)
	ln.next.Store(g)
	old := dial(t, inner.Addr().String(), packet.V311)
	old.Connect(&packet.Connect{ClientID: "mover", CleanStart: false})
	g.armed.Store(true)
	old.Send(&packet.Publish{Topic: "t", QoS: 1, PacketID: 1, Payload: []byte("held")})
	select {
	case <-g.reached:
	case <-time.After(10 * time.Second):
		t.Fatal("the connection's reader never read the PUBLISH")
	}

	start := time.Now()
	rec, done := s.HandOverBy("mover", true, start.Add(100*time.Millisecond))
	took := time.Since(start)
	if rec == nil || done == nil {
		t.Fatal("nothing handed over")
	}
	done(false)
	// settleTimeout is far past the 100 ms asked for: only a wait that
	// ignored by takes that long.
	if took >= settleTimeout {
		t.Errorf("HandOverBy with 100 ms took %v: it waited settleTimeout (%v) for a reader that does not settle", took, settleTimeout)
	}
}
