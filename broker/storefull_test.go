package broker

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// fullStore keeps nothing and reports a full disk while full is set.
type fullStore struct{ full atomic.Bool }

func (*fullStore) Load() (*StoredState, error) { return &StoredState{}, nil }
func (*fullStore) Append(...Op) Ticket         { return 1 }
func (*fullStore) Wait(Ticket) error           { return nil }
func (*fullStore) Close() error                { return nil }
func (f *fullStore) Healthy() error {
	if f.full.Load() {
		return fmt.Errorf("disk: %w", ErrStoreFull)
	}
	return nil
}

// A full store makes the broker refuse QoS 1/2 publishes with 0x97 (3.1.1
// publishers are disconnected), keep QoS 0 flowing, and recover.
func TestStoreFullRefusesQoS(t *testing.T) {
	st := &fullStore{}
	st.full.Store(true)
	_, addr := startServer(t, Options{Store: st})
	c := dial(t, addr, packet.V5)
	c.Connect(&packet.Connect{ClientID: "p5", CleanStart: true})
	c.Send(&packet.Publish{Topic: "t", QoS: 1, PacketID: 1, Payload: []byte("x")})
	if a, ok := c.Next(time.Second).(*packet.Puback); !ok || a.ReasonCode != packet.QuotaExceeded {
		t.Fatalf("got %+v, want PUBACK 0x97", a)
	}
	c.Send(&packet.Publish{Topic: "t", QoS: 2, PacketID: 2, Payload: []byte("x")})
	if a, ok := c.Next(time.Second).(*packet.Pubrec); !ok || a.ReasonCode != packet.QuotaExceeded {
		t.Fatalf("got %+v, want PUBREC 0x97", a)
	}
	old := dial(t, addr, packet.V311)
	old.Connect(&packet.Connect{ClientID: "p4", CleanStart: true})
	old.Send(&packet.Publish{Topic: "t", QoS: 1, PacketID: 1, Payload: []byte("x")})
	if got := old.ExpectClosed(time.Second); len(got) != 0 {
		t.Fatalf("3.1.1 publisher got %v, want a plain close", got)
	}
	st.full.Store(false)
	c.Send(&packet.Publish{Topic: "t", QoS: 1, PacketID: 3, Payload: []byte("x")})
	if a, ok := c.Next(time.Second).(*packet.Puback); !ok || a.ReasonCode >= 0x80 {
		t.Fatalf("after recovery got %+v, want a successful PUBACK", a)
	}
}
