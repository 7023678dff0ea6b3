package broker

import (
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// receiveQoS2 reads the next PUBLISH on c, which must be payload at QoS 2,
// and completes it (PUBREC, PUBREL, PUBCOMP).
func receiveQoS2(t *testing.T, c *mqtttest.Client, payload string) {
	t.Helper()
	p, ok := c.Next(5 * time.Second).(*packet.Publish)
	if !ok || string(p.Payload) != payload || p.QoS != 2 {
		t.Fatalf("got %+v, want %q at QoS 2", p, payload)
	}
	c.Send(&packet.Pubrec{PacketID: p.PacketID})
	if r, ok := c.Next(5 * time.Second).(*packet.Pubrel); !ok || r.PacketID != p.PacketID {
		t.Fatalf("got %+v, want PUBREL %d", r, p.PacketID)
	}
	c.Send(&packet.Pubcomp{PacketID: p.PacketID})
}

// TestDeliverRemoteCopyOnce: copies of one clean publisher's QoS 2
// message (RemoteMessage.Copy) reach a session once, also after its
// client completed the first (bench/jepsen/RESULTS.md, "QoS 2 twice to
// persistent sessions": a held copy after the forwarded one), and the
// session's record keeps what it got; a QoS 1 message is not held to it.
func TestDeliverRemoteCopyOnce(t *testing.T) {
	t.Parallel()
	st := &idLog{}
	s, addr := startServer(t, Options{Store: st})
	sub := dial(t, addr, packet.V5)
	sub.Connect(&packet.Connect{ClientID: "sub", CleanStart: true, Properties: persist})
	sub.Subscribe("t", 2)

	s.DeliverRemote(&RemoteMessage{Topic: "t", QoS: 2, Payload: []byte("m"), Copy: 7})
	receiveQoS2(t, sub, "m")
	// Completed: the client knows the packet id no more; another copy
	// would be a second delivery [MQTT-4.3.3].
	s.DeliverRemote(&RemoteMessage{Topic: "t", QoS: 2, Payload: []byte("m"), Copy: 7, Accepted: true})
	s.DeliverRemote(&RemoteMessage{Topic: "t", QoS: 2, Payload: []byte("n"), Copy: 8})
	receiveQoS2(t, sub, "n")
	// No Copy: nothing to tell copies apart by, each goes.
	s.DeliverRemote(&RemoteMessage{Topic: "t", QoS: 2, Payload: []byte("o")})
	receiveQoS2(t, sub, "o")
	s.DeliverRemote(&RemoteMessage{Topic: "t", QoS: 2, Payload: []byte("o")})
	receiveQoS2(t, sub, "o")
	for range 2 {
		s.DeliverRemote(&RemoteMessage{Topic: "t", QoS: 1, Payload: []byte("q1"), Copy: 9})
		if p, ok := sub.Next(5 * time.Second).(*packet.Publish); !ok || string(p.Payload) != "q1" {
			t.Fatalf("got %+v, want q1 (QoS 1: every copy goes)", p)
		} else {
			sub.Send(&packet.Puback{PacketID: p.PacketID})
		}
	}
	var stored Origin
	st.mu.Lock()
	ops := append([]Op(nil), st.ops...)
	st.mu.Unlock()
	for _, op := range ops {
		if op.Kind == OpQueuePut && op.ClientID == "sub" && op.Delivery.Msg != nil && string(op.Delivery.Msg.Payload) == "m" {
			stored = op.Delivery.Msg.Origin()
		}
	}
	if stored != copyOrigin(7) {
		t.Errorf("the stored copy of m has Origin %+v, want %+v: a session read back from its record would not know it", stored, copyOrigin(7))
	}

	// A session read back from its record (its copy of p was completed
	// and deleted, its Origin kept: StoredSession.Seen) does not get p
	// again.
	s.Adopt(&StoredSession{ClientID: "back", Expiry: 600, Subs: []StoredSub{{Filter: "t", Opts: packet.SubOptions{QoS: 2}}},
		Seen: []uint64{copyOrigin(5).Hash()}})
	if n, _ := s.DeliverRemote(&RemoteMessage{Topic: "t", QoS: 2, Payload: []byte("p"), Copy: 5, Pick: only("back")}); n != 1 {
		t.Errorf("a copy the session had counts as taken: %d, want 1", n)
	}
	s.DeliverRemote(&RemoteMessage{Topic: "t", QoS: 2, Payload: []byte("r"), Copy: 6, Pick: only("back")})
	if cs, _, _ := s.Client("back"); cs.Queued != 1 {
		t.Fatalf("back has %d queued, want 1 (r, not p)", cs.Queued)
	}
}

// only is a RemoteMessage.Pick for session id alone.
func only(id string) func(string) bool { return func(c string) bool { return c == id } }

// copyCluster names the copies of a message published here by its id
// (CopyNamer), as package cluster does by its origin key.
type copyCluster struct{ unconfirmedCluster }

func (*copyCluster) LocalCopy(m *Message) uint64 { return 1000 + m.ID }

// TestLocalCopyOnce: a clean publisher's QoS 2 message published here
// reaches a session here under the name its cluster copies carry, so a
// copy the cluster brings back (held for this node) does not reach it
// again; a QoS 1 or retained message is not named.
func TestLocalCopyOnce(t *testing.T) {
	t.Parallel()
	st := &idLog{}
	s, addr := startServer(t, Options{Store: st, Cluster: &copyCluster{}})
	sub := dial(t, addr, packet.V5)
	sub.Connect(&packet.Connect{ClientID: "sub", CleanStart: true, Properties: persist})
	sub.Subscribe("t", 2)
	pub := dial(t, addr, packet.V5)
	pub.Connect(&packet.Connect{ClientID: "pub", CleanStart: true})
	pub.Send(&packet.Publish{Topic: "t", QoS: 2, PacketID: 1, Payload: []byte("m")})
	if a, ok := pub.Next(5 * time.Second).(*packet.Pubrec); !ok || a.ReasonCode >= 0x80 {
		t.Fatalf("got %+v, want PUBREC", a)
	}
	receiveQoS2(t, sub, "m")
	var name uint64
	st.mu.Lock()
	for _, op := range st.ops {
		if op.Kind == OpQueuePut && op.ClientID == "sub" && string(op.Delivery.Msg.Payload) == "m" {
			name = op.Delivery.Msg.Origin().Nonce
		}
	}
	st.mu.Unlock()
	if name <= 1000 {
		t.Fatalf("the session's copy of m is named %d, want its LocalCopy", name)
	}
	s.DeliverRemote(&RemoteMessage{Topic: "t", QoS: 2, Payload: []byte("m"), Copy: name, Accepted: true})
	s.DeliverRemote(&RemoteMessage{Topic: "t", QoS: 2, Payload: []byte("n"), Copy: name + 1})
	receiveQoS2(t, sub, "n")
	for _, rt := range []bool{false, true} {
		p := &packet.Publish{Topic: "t", QoS: 1, PacketID: 2, Payload: []byte("q")}
		if rt {
			p = &packet.Publish{Topic: "t", QoS: 2, PacketID: 3, Retain: true, Payload: []byte("r")}
		}
		pub.Send(p)
		pub.Next(5 * time.Second)
		got, ok := sub.Next(5 * time.Second).(*packet.Publish)
		if !ok || string(got.Payload) != string(p.Payload) {
			t.Fatalf("got %+v, want %q", got, p.Payload)
		}
		if o := got.QoS; o == 1 {
			sub.Send(&packet.Puback{PacketID: got.PacketID})
		} else {
			sub.Send(&packet.Pubrec{PacketID: got.PacketID})
			sub.Next(5 * time.Second)
			sub.Send(&packet.Pubcomp{PacketID: got.PacketID})
		}
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, op := range st.ops {
		if op.Kind == OpQueuePut && op.Delivery.Msg != nil && (string(op.Delivery.Msg.Payload) == "q" || string(op.Delivery.Msg.Payload) == "r") &&
			!op.Delivery.Msg.Origin().IsZero() {
			t.Errorf("%q stored with Origin %+v, want none", op.Delivery.Msg.Payload, op.Delivery.Msg.Origin())
		}
	}
}
