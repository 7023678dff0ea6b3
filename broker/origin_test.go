package broker

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// idLog is a Store that keeps every op appended, for checking their order.
type idLog struct {
	mu  sync.Mutex
	ops []Op
}

func (*idLog) Load() (*StoredState, error) { return &StoredState{}, nil }
func (l *idLog) Append(ops ...Op) Ticket {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ops = append(l.ops, ops...)
	return Ticket(len(l.ops))
}
func (*idLog) Wait(Ticket) error { return nil }
func (*idLog) Close() error      { return nil }

// inbound returns the OpInboundPut ops of client id and packet id pid.
func (l *idLog) inbound(id string, pid uint16) []Op {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Op
	for _, op := range l.ops {
		if op.Kind == OpInboundPut && op.ClientID == id && op.PacketID == pid {
			out = append(out, op)
		}
	}
	return out
}

// originCluster is a Cluster that carries Origins (OriginForwarder): it
// records them, with the publisher's id ops the store had by then, and
// does not confirm while fail is set.
type originCluster struct {
	unconfirmedCluster
	store *idLog
	mu    sync.Mutex
	got   []Origin
	// before: for each forward, the OpInboundPut ops of its id appended
	// before it.
	before [][]Op
}

func (c *originCluster) ForwardOrigin(m *Message, o Origin) (int, func() error) {
	c.mu.Lock()
	c.got = append(c.got, o)
	c.before = append(c.before, c.store.inbound(o.ClientID, o.PacketID))
	c.mu.Unlock()
	return c.Forward(m)
}

func (c *originCluster) origins() []Origin {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.got)
}

var _ OriginForwarder = (*originCluster)(nil)

// TestQoS2OriginResend: in a cluster that carries Origins, a persistent
// publisher's QoS 2 id is journalled with a nonce before the message is
// forwarded; a publish the cluster did not confirm leaves the id with its
// nonce, and the DUP resend is routed again under the same Origin, which
// the local subscriber (that got the first routing) does not get twice;
// once confirmed, the id is journalled as routed, and a resend is
// answered PUBREC without routing [MQTT-4.3.3-10].
func TestQoS2OriginResend(t *testing.T) {
	t.Parallel()
	st := &idLog{}
	cl := &originCluster{store: st}
	_, addr := startServer(t, Options{Store: st, Cluster: cl})
	sub := dial(t, addr, packet.V5)
	sub.Connect(&packet.Connect{ClientID: "sub", CleanStart: true})
	sub.Subscribe("t", 2)

	pub := dial(t, addr, packet.V5)
	pub.Connect(&packet.Connect{ClientID: "pub", CleanStart: true, Properties: persist})
	cl.fail.Store(true)
	pub.Send(&packet.Publish{Topic: "t", QoS: 2, PacketID: 2, Payload: []byte("m")})
	expectUnknownClose(t, pub, packet.V5)
	cl.fail.Store(false)
	resendQoS2(t, addr, packet.V5, "pub", 2, "m")
	expectOnce(t, sub, "m")

	got := cl.origins()
	if len(got) != 2 || got[0] != got[1] || got[0].ClientID != "pub" || got[0].PacketID != 2 || got[0].IsZero() {
		t.Fatalf("forwards under origins %+v, want twice under the same one", got)
	}
	for i, before := range cl.before {
		if len(before) == 0 || before[len(before)-1].Nonce != got[0].Nonce {
			t.Errorf("forward %d: id ops before it %+v, want the id with nonce %d", i, before, got[0].Nonce)
		}
	}
	ops := st.inbound("pub", 2)
	if last := ops[len(ops)-1]; last.Nonce != 0 {
		t.Errorf("last op of id 2 %+v, want it journalled as routed (nonce 0)", last)
	}

	// Routed and confirmed: a resend before PUBREL is not routed again.
	pub = dial(t, addr, packet.V5)
	pub.Connect(&packet.Connect{ClientID: "pub", Properties: persist})
	pub.Send(&packet.Publish{Topic: "t", QoS: 2, PacketID: 3, Payload: []byte("n")})
	if a, ok := pub.Next(5 * time.Second).(*packet.Pubrec); !ok || a.ReasonCode != packet.Success {
		t.Fatalf("PUBLISH 3: got %+v, want PUBREC 0x00", a)
	}
	resendQoS2(t, addr, packet.V5, "pub", 3, "n")
	expectOnce(t, sub, "n")
	if n := len(cl.origins()); n != 3 {
		t.Errorf("%d forwards, want 3: a confirmed id's resend was routed again", n)
	}
}

// TestOriginRingBounded: a session remembers the last seenMax Origins, and
// its list comes out oldest first.
func TestOriginRingBounded(t *testing.T) {
	t.Parallel()
	var r originRing
	for h := uint64(1); h <= seenMax+10; h++ {
		if !r.add(h) {
			t.Fatalf("add(%d): seen before", h)
		}
	}
	if r.add(seenMax + 10) {
		t.Error("the newest is not remembered")
	}
	if !r.add(5) {
		t.Error("one of the oldest is still remembered")
	}
	l := r.list()
	if len(l) != seenMax || l[0] != 12 || l[len(l)-1] != 5 {
		t.Errorf("list: %d entries from %d to %d, want %d from 12 to 5", len(l), l[0], l[len(l)-1], seenMax)
	}
}

// TestOriginSeenExpires: a server forgets the groups an Origin reached
// after originTTL and beyond originMax Origins.
func TestOriginSeenExpires(t *testing.T) {
	t.Parallel()
	var s originSeen
	if !s.first("o", "g") || s.first("o", "g") || !s.first("o", "h") {
		t.Fatal("first per group")
	}
	s.mu.Lock()
	s.m["o"].at = time.Now().Add(-originTTL - time.Second)
	s.mu.Unlock()
	if !s.first("p", "g") || !s.first("o", "g") {
		t.Error("an expired Origin is still remembered")
	}
	// Three times over: the keys kept stay in step with the map, and
	// the slice holding them stays bounded (expire moves them only once
	// half of it is spent).
	for i := range 3 * originMax {
		s.first(fmt.Sprint(i), "g")
	}
	s.mu.Lock()
	n, kept, held := len(s.m), len(s.order)-s.head, len(s.order)
	s.mu.Unlock()
	if n > originMax || kept != n || held > 2*originMax+1 {
		t.Errorf("%d Origins remembered, %d keys kept in a slice of %d; want at most %d, as many, at most %d",
			n, kept, held, originMax, 2*originMax+1)
	}
	if s.first(fmt.Sprint(3*originMax-1), "g") || !s.first(fmt.Sprint(2*originMax-1), "g") {
		t.Error("the newest Origin forgotten, or the oldest kept")
	}
}

// TestQoS2OriginGroupOnce: a share group gets a resend routed under the
// same Origin once, also when this node has forgotten serving it (a
// restart: the table is cleared here) but a member has the message.
func TestQoS2OriginGroupOnce(t *testing.T) {
	t.Parallel()
	st := &idLog{}
	cl := &originCluster{store: st}
	srv, addr := startServer(t, Options{Store: st, Cluster: cl})
	var members []*mqtttest.Client
	for _, id := range []string{"m1", "m2"} {
		m := dial(t, addr, packet.V5)
		m.Connect(&packet.Connect{ClientID: id, CleanStart: true})
		m.Subscribe("$share/g/t", 2)
		members = append(members, m)
	}
	pub := dial(t, addr, packet.V5)
	pub.Connect(&packet.Connect{ClientID: "pub", CleanStart: true, Properties: persist})
	cl.fail.Store(true)
	pub.Send(&packet.Publish{Topic: "t", QoS: 2, PacketID: 4, Payload: []byte("g")})
	expectUnknownClose(t, pub, packet.V5)
	cl.fail.Store(false)
	srv.origins.mu.Lock()
	srv.origins.m, srv.origins.order, srv.origins.head = nil, nil, 0
	srv.origins.mu.Unlock()
	resendQoS2(t, addr, packet.V5, "pub", 4, "g")
	n := 0
	for _, m := range members {
		for _, p := range m.Collect(time.Second) {
			if p, ok := p.(*packet.Publish); ok && string(p.Payload) == "g" {
				n++
			}
		}
	}
	if n != 1 {
		t.Fatalf("group got the message %d times, want once", n)
	}
}

// TestOriginSkipWaitsForTheCopy: a session that got an Origin's message
// before hands the ticket of that copy to the routing that skips it, so
// that its confirmation waits for the copy to be durable (the first
// routing's publisher may have given up before).
func TestOriginSkipWaitsForTheCopy(t *testing.T) {
	t.Parallel()
	ss := &session{}
	h := Origin{ClientID: "p", PacketID: 1, Nonce: 7}.Hash()
	if first, _ := ss.firstOrigin(h); !first {
		t.Fatal("first copy taken for a repeat")
	}
	ss.originTicket(h, 42)
	if first, tk := ss.firstOrigin(h); first || tk != 42 {
		t.Fatalf("repeat: first %v, ticket %d; want false, 42", first, tk)
	}
}

// ownerCluster is an originCluster that answers CheckOwner with owner
// (OwnerChecker), noting the publisher's id ops the store had when asked.
type ownerCluster struct {
	originCluster
	owner  error
	asked  int
	before []Op
}

func (c *ownerCluster) CheckOwner(id string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.asked++
	c.before = c.store.inbound(id, 4)
	return c.owner
}

var _ OwnerChecker = (*ownerCluster)(nil)

// TestQoS2OwnerChecked: the first routing of a persistent publisher's
// QoS 2 id waits until the cluster says the client id is still this
// node's, asked once the id and its nonce were journalled. A node whose
// client id another node owns now routes nothing and ends the connection
// as taken over (0x8E): the client sent the message again where its
// session is (TestReproStalePublish in package cluster). One that cannot
// tell leaves the outcome unknown (0x80).
func TestQoS2OwnerChecked(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		owner  error
		routed bool
	}{
		{"owned here", nil, true},
		{"owned elsewhere", fmt.Errorf("record: %w", ErrOwnedElsewhere), false},
		{"unknown", fmt.Errorf("owner record: no quorum"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := &idLog{}
			cl := &ownerCluster{originCluster: originCluster{store: st}, owner: tc.owner}
			_, addr := startServer(t, Options{Store: st, Cluster: cl})
			sub := dial(t, addr, packet.V5)
			sub.Connect(&packet.Connect{ClientID: "sub", CleanStart: true})
			sub.Subscribe("t", 2)
			pub := dial(t, addr, packet.V5)
			pub.Connect(&packet.Connect{ClientID: "pub", CleanStart: true, Properties: persist})
			pub.Send(&packet.Publish{Topic: "t", QoS: 2, PacketID: 4, Payload: []byte("m")})
			switch {
			case tc.routed:
				if a, ok := pub.Next(5 * time.Second).(*packet.Pubrec); !ok || a.ReasonCode != packet.Success {
					t.Fatalf("got %+v, want PUBREC 0x00", a)
				}
				expectOnce(t, sub, "m")
			case tc.owner != nil && errors.Is(tc.owner, ErrOwnedElsewhere):
				got := pub.ExpectClosed(5 * time.Second)
				if len(got) != 1 {
					t.Fatalf("got %v, want DISCONNECT 0x8E then a close", got)
				}
				if d, ok := got[0].(*packet.Disconnect); !ok || d.ReasonCode != packet.SessionTakenOver {
					t.Fatalf("got %+v, want DISCONNECT 0x8E", got[0])
				}
				expectNever(t, sub, "m")
			default:
				expectUnknownClose(t, pub, packet.V5)
				expectNever(t, sub, "m")
			}
			cl.mu.Lock()
			defer cl.mu.Unlock()
			if cl.asked != 1 {
				t.Errorf("CheckOwner asked %d times, want once", cl.asked)
			}
			if len(cl.before) == 0 || cl.before[len(cl.before)-1].Nonce == 0 {
				t.Errorf("id ops before CheckOwner %+v, want the id with its nonce", cl.before)
			}
			if n := len(cl.got); tc.routed != (n == 1) || n > 1 {
				t.Errorf("%d forwards, want routed %v", n, tc.routed)
			}
		})
	}
}

// expectNever checks that sub does not get payload before a marker
// published after it.
func expectNever(t *testing.T, sub *mqtttest.Client, payload string) {
	t.Helper()
	sub.Send(&packet.Publish{Topic: "t", Payload: []byte("marker")})
	for {
		p, err := sub.Read(5 * time.Second)
		if err != nil {
			t.Fatalf("marker not received: %v", err)
		}
		m, ok := p.(*packet.Publish)
		if !ok {
			continue
		}
		switch string(m.Payload) {
		case payload:
			t.Fatalf("%q routed", payload)
		case "marker":
			return
		}
	}
}
