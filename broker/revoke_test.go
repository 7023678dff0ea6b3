package broker

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// Read access revoked while messages wait for a session stops the queued
// ones: not sent, counted as DropUnauthorized and deleted from the store;
// a queued message on a topic still allowed is delivered. The one already
// sent and unacknowledged is resent [MQTT-4.4.0-1]: its delivery had
// started.
func TestRevokedReceiveAtDelivery(t *testing.T) {
	t.Parallel()
	var revoked atomic.Bool
	log := &opLog{}
	s, addr := startServer(t, Options{Store: log, Authorizer: AuthorizerFunc(
		func(_ context.Context, _ *ClientInfo, act Action, topic string) bool {
			return act != ActionReceive || topic[0] != 'b' || !revoked.Load()
		})})
	subConnect := &packet.Connect{ClientID: "sub", Properties: packet.Properties{SessionExpiry: 3600, ReceiveMaximum: 1}}
	subConnect.Properties.Set(packet.PropSessionExpiry)
	subConnect.Properties.Set(packet.PropReceiveMaximum)
	sub := mqtttest.Dial(t, addr, packet.V5)
	sub.Connect(subConnect)
	sub.Subscribe("#", 1)
	pub := mqtttest.Dial(t, addr, packet.V5)
	pub.Connect(&packet.Connect{ClientID: "pub", CleanStart: true})
	for i, topic := range []string{"b/1", "b/2", "a/1"} {
		pub.Send(&packet.Publish{Topic: topic, QoS: 1, PacketID: uint16(i + 1), Payload: []byte("x")})
		pub.Next(2 * time.Second) // PUBACK
	}
	// The window of one holds b/1, unacknowledged; b/2 and a/1 are queued.
	if p, ok := sub.Next(2 * time.Second).(*packet.Publish); !ok || p.Topic != "b/1" {
		t.Fatalf("first delivery %v, want b/1", p)
	}
	sub.NC.Close()
	s.mu.Lock()
	ss := s.sessions["sub"]
	s.mu.Unlock()
	mqtttest.Eventually(t, 2*time.Second, func() bool {
		ss.mu.Lock()
		defer ss.mu.Unlock()
		return ss.conn == nil
	})
	var queuedB uint64 // store key of b/2
	ss.mu.Lock()
	for _, ob := range ss.queue[ss.qhead:] {
		if ob.msg.Topic == "b/2" {
			queuedB = ob.seq
		}
	}
	ss.mu.Unlock()

	revoked.Store(true)
	sub = mqtttest.Dial(t, addr, packet.V5)
	subConnect.CleanStart = false
	if ack := sub.Connect(subConnect); !ack.SessionPresent {
		t.Fatal("session not resumed")
	}
	// Order is kept on resumption [MQTT-4.6.0-1]: b/2 would come between
	// the resent b/1 and a/1. The window of one lets a/1 out once b/1 is
	// acknowledged.
	var topics []string
	for len(topics) < 2 {
		p, ok := sub.Next(2 * time.Second).(*packet.Publish)
		if !ok {
			t.Fatalf("got %v, want PUBLISH", p)
		}
		topics = append(topics, p.Topic)
		if p.Topic == "b/1" && !p.Dup {
			t.Error("b/1 resent without DUP")
		}
		sub.Send(&packet.Puback{PacketID: p.PacketID})
	}
	if !slices.Equal(topics, []string{"b/1", "a/1"}) {
		t.Fatalf("after revocation the client got %q, want b/1 (resent) and a/1", topics)
	}
	if n := s.Stats().Dropped[DropUnauthorized]; n != 1 {
		t.Errorf("Dropped[not_authorized] = %d, want 1 (b/2)", n)
	}
	if deleted := log.deleted(); queuedB == 0 || !slices.Contains(deleted, queuedB) {
		t.Errorf("store deletions %v, want b/2's (%d) among them", deleted, queuedB)
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if len(ss.byPID) > 1 || ss.queueLen() != 0 {
		t.Errorf("session keeps %d packet ids and %d queued messages", len(ss.byPID), ss.queueLen())
	}
}

// BenchmarkMayReceive is the check added to every message leaving a
// session's queue: one comparison without an Authorizer, one call with.
func BenchmarkMayReceive(b *testing.B) {
	allow := AuthorizerFunc(func(context.Context, *ClientInfo, Action, string) bool { return true })
	for _, tc := range []struct {
		name string
		az   Authorizer
	}{{"none", nil}, {"func", allow}} {
		b.Run(tc.name, func(b *testing.B) {
			ss := newSession(&Server{opts: Options{Authorizer: tc.az}}, "c")
			ss.info.Store(&ClientInfo{ClientID: "c"})
			// As enqueue leaves it: unchecked when there is an Authorizer.
			ob := &outbound{msg: &Message{Topic: "a/b"}, unchecked: tc.az != nil}
			b.ReportAllocs()
			for b.Loop() {
				if allow, known := ss.mayReceive(ob); !allow || !known {
					b.Fatal("refused")
				}
			}
		})
	}
}
