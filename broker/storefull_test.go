package broker

import (
	"context"
	"errors"
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
	t.Parallel()
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

// While the store cannot take writes, a CONNECT asking for a session that
// outlives the connection is refused with a reason code (MQTT 5: 0x97;
// 3.1.x: 0x03 Server unavailable) rather than closed without CONNACK; clean
// sessions connect and QoS 0 flows; persistent sessions connect again once
// the store recovers.
func TestStoreFullRefusesPersistentSessions(t *testing.T) {
	t.Parallel()
	st := &fullStore{}
	st.full.Store(true)
	_, addr := startServer(t, Options{Store: st})
	refused := []struct {
		name string
		v    packet.Version
		p    packet.Connect
		want packet.ReasonCode
	}{
		{"5 clean start false", packet.V5, packet.Connect{ClientID: "a", CleanStart: false}, packet.QuotaExceeded},
		{"5 session expiry", packet.V5, packet.Connect{ClientID: "b", CleanStart: true,
			Properties: packet.Properties{Present: 1 << packet.PropSessionExpiry, SessionExpiry: 60}}, packet.QuotaExceeded},
		{"3.1.1 clean session false", packet.V311, packet.Connect{ClientID: "c"}, packet.Connack311ServerUnavailable},
		{"3.1 clean session false", packet.V31, packet.Connect{ClientID: "d"}, packet.Connack311ServerUnavailable},
	}
	for _, tc := range refused {
		c := dial(t, addr, tc.v)
		p := tc.p
		p.ProtocolVersion = tc.v
		c.Send(&p)
		got := c.ExpectClosed(2 * time.Second)
		if len(got) != 1 {
			t.Fatalf("%s: got %v, want one CONNACK then a close", tc.name, got)
		}
		if a, ok := got[0].(*packet.Connack); !ok || a.ReasonCode != tc.want {
			t.Fatalf("%s: got %+v, want CONNACK 0x%02X", tc.name, got[0], byte(tc.want))
		}
	}
	for _, v := range []packet.Version{packet.V5, packet.V311} {
		sub := dial(t, addr, v)
		sub.Connect(&packet.Connect{ClientID: fmt.Sprint("sub", v), CleanStart: true})
		sub.Subscribe("q0", 0)
		sub.Send(&packet.Publish{Topic: "q0", Payload: []byte("x")})
		if m, ok := sub.Next(time.Second).(*packet.Publish); !ok || string(m.Payload) != "x" {
			t.Fatalf("v%d: QoS 0 with the store full: got %+v", v, m)
		}
	}
	st.full.Store(false)
	c := dial(t, addr, packet.V5)
	c.Connect(&packet.Connect{ClientID: "a", CleanStart: false})
	old := dial(t, addr, packet.V311)
	old.Connect(&packet.Connect{ClientID: "c"})
}

// closeStore records Close.
type closeStore struct {
	fullStore
	closed atomic.Bool
}

func (s *closeStore) Close() error { s.closed.Store(true); return nil }

// Shutdown closes the store, with its final sync, even when its context
// has expired while connections were still ending.
func TestShutdownExpiredClosesStore(t *testing.T) {
	t.Parallel()
	st := &closeStore{}
	srv, addr := startServer(t, Options{Store: st})
	for i := range 3 {
		c := dial(t, addr, packet.V5)
		c.Connect(&packet.Connect{ClientID: fmt.Sprint("c", i), CleanStart: true})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	srv.Shutdown(ctx)
	if !st.closed.Load() {
		t.Fatal("store not closed by Shutdown with an expired context")
	}
}

// failStore keeps nothing; its Wait fails with the error in fail while one
// is set, as a store whose write or sync fails does (Healthy stays nil:
// the failure came after the publish was accepted).
type failStore struct {
	fullStore
	tickets atomic.Uint64
	fail    atomic.Pointer[error]
}

func (s *failStore) Append(...Op) Ticket { return Ticket(s.tickets.Add(1)) }
func (s *failStore) Wait(Ticket) error {
	if err := s.fail.Load(); err != nil {
		return *err
	}
	return nil
}

// A QoS 2 PUBLISH to a subscriber whose packet id the store failed to keep
// is not sent (a restart would send it under another id, and it could be
// delivered twice): the connection closes (MQTT 5: DISCONNECT 0x80), and
// the session sends it on the next one.
func TestStoreWaitFailureHoldsQoS2Delivery(t *testing.T) {
	t.Parallel()
	st := &failStore{}
	_, addr := startServer(t, Options{Store: st})
	expiry := packet.Properties{Present: 1 << packet.PropSessionExpiry, SessionExpiry: 300}
	sub := dial(t, addr, packet.V5)
	sub.Connect(&packet.Connect{ClientID: "sub2", CleanStart: true, Properties: expiry})
	sub.Subscribe("q2", 2)
	pub := dial(t, addr, packet.V5)
	pub.Connect(&packet.Connect{ClientID: "pub2", CleanStart: true})

	ioErr := errors.New("injected: sync failed")
	st.fail.Store(&ioErr)
	pub.Send(&packet.Publish{Topic: "q2", QoS: 2, PacketID: 7, Payload: []byte("w")})
	if got := pub.ExpectClosed(2 * time.Second); len(got) != 1 || got[0].(*packet.Disconnect).ReasonCode != packet.UnspecifiedError {
		t.Fatalf("publisher with the store failing: %v, want DISCONNECT 0x80", got)
	}
	if got := sub.ExpectClosed(2 * time.Second); len(got) != 1 || got[0].(*packet.Disconnect).ReasonCode != packet.UnspecifiedError {
		t.Fatalf("subscriber got %v with the store failing, want DISCONNECT 0x80", got)
	}
	st.fail.Store(nil)
	sub = dial(t, addr, packet.V5)
	if ack := sub.Connect(&packet.Connect{ClientID: "sub2", CleanStart: false, Properties: expiry}); !ack.SessionPresent {
		t.Fatal("session not present")
	}
	if m, ok := sub.Next(2 * time.Second).(*packet.Publish); !ok || string(m.Payload) != "w" || m.QoS != 2 {
		t.Fatalf("after reconnecting: %+v, want the QoS 2 message", m)
	}
}
