package store_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
	"github.com/roost-mqtt/roost/store"
)

// The tests here run one exchange against a broker on a recorder, then
// restart a broker on every journal a crash could have left of it (every
// cut between two Appends outside a hold), once for every state the
// clients could be in at that moment, given which of the broker's packets
// had been written (a packet is written once the ops it waited for are
// durable: the recorder's Wait tells which). The clients then do what the
// specification asks of them on a resumed session, and the tests check
// what they receive: exactly once for QoS 2, at least once for QoS 1,
// whatever the crash kept. Nothing but the journal is timed.

// receiver is a subscriber with the QoS 2 receive state the specification
// asks of a client [MQTT-4.3.3-10]: a PUBLISH with a packet id it holds
// (awaiting PUBREL) is not a new message.
type receiver struct {
	c    *mqtttest.Client
	held map[uint16]bool
	got  map[string]int // new deliveries per payload
}

func connectReceiver(t *testing.T, addr, id string, held map[uint16]bool) *receiver {
	t.Helper()
	c := mqtttest.Dial(t, addr, packet.V5)
	if ack := c.Connect(persistent(id)); !ack.SessionPresent {
		t.Fatalf("%s: session not present after the restart", id)
	}
	if held == nil {
		held = map[uint16]bool{}
	}
	return &receiver{c: c, held: held, got: map[string]int{}}
}

// drain reads and acknowledges until a message with one of the payloads
// in until arrives, and returns which. Deliveries from one publisher on
// one topic keep their order [MQTT-4.6.0-5], so whatever copies of
// earlier messages the session holds come first.
func (r *receiver) drain(t *testing.T, until ...string) string {
	t.Helper()
	for {
		p, err := r.c.Read(2 * time.Second)
		if err != nil {
			t.Fatalf("waiting for %q: %v (got %v)", until, err, r.got)
		}
		switch m := p.(type) {
		case *packet.Publish:
			switch {
			case m.QoS == 1:
				r.c.Send(&packet.Puback{PacketID: m.PacketID})
				r.got[string(m.Payload)]++
			case m.QoS == 2 && r.held[m.PacketID]:
				r.c.Send(&packet.Pubrec{PacketID: m.PacketID})
			case m.QoS == 2:
				r.held[m.PacketID] = true
				r.c.Send(&packet.Pubrec{PacketID: m.PacketID})
				r.got[string(m.Payload)]++
			default:
				r.got[string(m.Payload)]++
			}
			for _, u := range until {
				if string(m.Payload) == u {
					return u
				}
			}
		case *packet.Pubrel:
			delete(r.held, m.PacketID)
			r.c.Send(&packet.Pubcomp{PacketID: m.PacketID})
		}
	}
}

// restart starts a broker on the first k Appends of rec's journal.
func restart(t *testing.T, rec *recorder, k int) string {
	t.Helper()
	mem := store.NewMemory()
	mem.Append(rec.journal(k)...)
	addr, _ := run(t, mem)
	return addr
}

func expect[P packet.Packet](t *testing.T, c *mqtttest.Client, what string) P {
	t.Helper()
	p, err := c.Read(2 * time.Second)
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
	m, ok := p.(P)
	if !ok {
		t.Fatalf("want %s, got %T %+v", what, p, p)
	}
	return m
}

// offline subscribes a persistent session to filter and disconnects it,
// so that what is published next is queued for it.
func offline(t *testing.T, addr, id, filter string, qos packet.QoS) {
	c := mqtttest.Dial(t, addr, packet.V5)
	c.Connect(persistent(id))
	c.Subscribe(filter, qos)
	c.Send(&packet.Disconnect{})
	c.ExpectClosed(time.Second)
}

// A message published by a persistent session, retained, for two
// persistent subscribers (QoS 2 and QoS 1) and a shared group of two
// persistent members, all offline. At every cut, with the publisher in
// every state it could be in, after its resumed session finishes the
// exchange [MQTT-4.4.0-1] the QoS 2 subscriber and the group have the
// message exactly once (QoS 2) or at least once (QoS 1), the QoS 1
// subscriber at least once, and the topic retains it.
func TestPublishSurvivesACrashAtEveryCut(t *testing.T) {
	t.Parallel()
	for _, qos := range []packet.QoS{1, 2} {
		t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) { testPublishCuts(t, qos) })
	}
}

// pubState is what the publisher had received when the broker crashed.
type pubState int

const (
	gotNothing pubState = iota // resends the PUBLISH (DUP)
	gotAck                     // QoS 2: PUBREC, sends PUBREL; QoS 1: PUBACK, done
	gotPubcomp                 // QoS 2: done
)

func (s pubState) String() string { return [...]string{"nothing", "ack", "pubcomp"}[s] }

func testPublishCuts(t *testing.T, qos packet.QoS) {
	rec := &recorder{}
	addr, stop := run(t, rec)
	offline(t, addr, "q2", "x", 2)
	offline(t, addr, "q1", "x", 1)
	offline(t, addr, "g1", "$share/g/x", 2)
	offline(t, addr, "g2", "$share/g/x", 2)
	pub := mqtttest.Dial(t, addr, packet.V5)
	pub.Connect(persistent("p"))
	from := rec.count()
	pub.Send(&packet.Publish{Topic: "x", QoS: qos, Retain: true, PacketID: 7, Payload: []byte("once")})
	var needAck, released, needComp int
	if qos == 1 {
		expect[*packet.Puback](t, pub, "PUBACK")
		needAck = rec.acked()
		released, needComp = rec.count()+1, rec.count()+1 // no such step
	} else {
		expect[*packet.Pubrec](t, pub, "PUBREC")
		needAck = rec.acked()
		released = rec.count() // Appends before the PUBREL
		pub.Send(&packet.Pubrel{PacketID: 7})
		expect[*packet.Pubcomp](t, pub, "PUBCOMP")
		needComp = rec.acked()
	}
	stop()

	cuts := rec.cuts(from)
	tried := 0
	for _, k := range cuts {
		for _, st := range []pubState{gotNothing, gotAck, gotPubcomp} {
			switch {
			case st == gotNothing && k > released: // the journal has its PUBREL
			case st == gotAck && needAck > k:
			case st == gotPubcomp && (qos == 1 || needComp > k):
			default:
				tried++
				t.Run(fmt.Sprintf("cut%d/%v", k, st), func(t *testing.T) { checkPublishCut(t, rec, k, qos, st) })
			}
		}
	}
	if t.Failed() {
		t.Logf("cuts %v of %d Appends (the publish from %d); holds %v; PUBACK/PUBREC needed %d, PUBCOMP %d",
			cuts, rec.count(), from, rec.held, needAck, needComp)
	}
	if tried < 3 {
		t.Fatalf("only %d crash states tried: cuts %v", tried, cuts)
	}
}

func checkPublishCut(t *testing.T, rec *recorder, k int, qos packet.QoS, st pubState) {
	addr := restart(t, rec, k)
	pub := mqtttest.Dial(t, addr, packet.V5)
	if ack := pub.Connect(persistent("p")); !ack.SessionPresent {
		t.Fatal("publisher session not present after the restart")
	}
	switch st {
	case gotNothing:
		pub.Send(&packet.Publish{Topic: "x", QoS: qos, Retain: true, Dup: true, PacketID: 7, Payload: []byte("once")})
		if qos == 1 {
			expect[*packet.Puback](t, pub, "PUBACK for the resent PUBLISH")
			break
		}
		if rc := expect[*packet.Pubrec](t, pub, "PUBREC for the resent PUBLISH"); rc.ReasonCode >= 0x80 {
			t.Fatalf("PUBREC 0x%02X for the resent PUBLISH", byte(rc.ReasonCode))
		}
		pub.Send(&packet.Pubrel{PacketID: 7})
		expect[*packet.Pubcomp](t, pub, "PUBCOMP")
	case gotAck:
		if qos == 2 {
			pub.Send(&packet.Pubrel{PacketID: 7})
			expect[*packet.Pubcomp](t, pub, "PUBCOMP")
		}
	}
	// Two markers, with consecutive message ids: the group's members
	// take turns by message id, so each member gets one.
	for i, m := range []string{"mark1", "mark2"} {
		pub.Send(&packet.Publish{Topic: "x", QoS: 1, PacketID: uint16(10 + i), Payload: []byte(m)})
		expect[*packet.Puback](t, pub, "PUBACK for a marker")
	}

	q2 := connectReceiver(t, addr, "q2", nil)
	q2.drain(t, "mark2")
	q1 := connectReceiver(t, addr, "q1", nil)
	q1.drain(t, "mark2")
	group := 0
	for _, id := range []string{"g1", "g2"} {
		m := connectReceiver(t, addr, id, nil)
		m.drain(t, "mark1", "mark2")
		group += m.got["once"]
	}
	switch {
	case qos == 2 && q2.got["once"] != 1:
		t.Errorf("QoS 2 subscriber got the message %d times, want once", q2.got["once"])
	case q2.got["once"] < 1:
		t.Errorf("QoS 2 subscriber never got the QoS 1 message")
	}
	if q1.got["once"] < 1 {
		t.Errorf("QoS 1 subscriber never got the message")
	}
	switch {
	case qos == 2 && group != 1:
		t.Errorf("the shared group got the QoS 2 message %d times, want once", group)
	case group < 1:
		t.Errorf("the shared group never got the message")
	}

	r := mqtttest.Dial(t, addr, packet.V5)
	r.Connect(&packet.Connect{ClientID: "reader", CleanStart: true})
	r.Subscribe("x", 0)
	if m := expect[*packet.Publish](t, r, "the retained message"); !m.Retain || string(m.Payload) != "once" {
		t.Errorf("retained %q (retain %v), want \"once\"", m.Payload, m.Retain)
	}
}

// subState is what an online QoS 2 subscriber had received and answered
// when the broker crashed.
type subState int

const (
	subNothing   subState = iota // no PUBLISH
	subPublish                   // the PUBLISH, answered PUBREC, holding its id
	subCompleted                 // the PUBREL too, answered PUBCOMP: the id forgotten
)

func (s subState) String() string { return [...]string{"nothing", "publish", "completed"}[s] }

// A QoS 2 message to an online persistent subscriber: PUBLISH, PUBREC,
// PUBREL, PUBCOMP. At every cut, with the subscriber in every state it
// could be in, its resumed session finishes the exchange and the
// subscriber has had the message at most once, and once if its publisher
// may have had the PUBREC: in particular the broker
// must not send the PUBLISH again after the subscriber got the PUBREL and
// forgot the packet id, which is why a PUBREL waits until the released
// state is durable.
func TestOutboundQoS2SurvivesACrashAtEveryCut(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	addr, stop := run(t, rec)
	sub := mqtttest.Dial(t, addr, packet.V5)
	sub.Connect(persistent("s"))
	sub.Subscribe("x", 2)
	pub := mqtttest.Dial(t, addr, packet.V5)
	pub.Connect(&packet.Connect{ClientID: "p", CleanStart: true})
	from := rec.count()
	pub.Send(&packet.Publish{Topic: "x", QoS: 2, PacketID: 7, Payload: []byte("once")})
	expect[*packet.Pubrec](t, pub, "PUBREC")
	needPubrec := rec.acked()
	m := expect[*packet.Publish](t, sub, "the PUBLISH")
	needPublish := rec.acked() // at most: the publisher's PUBREC waited too
	pid := m.PacketID
	answered := rec.count()
	sub.Send(&packet.Pubrec{PacketID: pid})
	expect[*packet.Pubrel](t, sub, "PUBREL")
	needPubrel := rec.acked()
	completed := rec.count()
	sub.Send(&packet.Pubcomp{PacketID: pid})
	// Something after the PUBCOMP, so that its op is journalled before
	// the broker stops.
	pub.Send(&packet.Publish{Topic: "y", QoS: 1, PacketID: 8, Payload: []byte("after")})
	expect[*packet.Puback](t, pub, "PUBACK")
	stop()

	cuts := rec.cuts(from)
	tried := 0
	for _, k := range cuts {
		for _, st := range []subState{subNothing, subPublish, subCompleted} {
			switch {
			case st == subNothing && k > answered: // the journal has its PUBREC's effect
			case st == subPublish && (needPublish > k || k > completed):
			case st == subCompleted && needPubrel > k:
			default:
				tried++
				owed := k >= needPubrec // the publisher may have had its PUBREC
				t.Run(fmt.Sprintf("cut%d/%v", k, st), func(t *testing.T) { checkOutboundCut(t, rec, k, pid, st, owed) })
			}
		}
	}
	if t.Failed() {
		t.Logf("cuts %v of %d Appends (the publish from %d); PUBREC needed %d, PUBLISH %d, PUBREL %d", cuts, rec.count(), from, needPubrec, needPublish, needPubrel)
	}
	if tried < 3 {
		t.Fatalf("only %d crash states tried: cuts %v", tried, cuts)
	}
}

func checkOutboundCut(t *testing.T, rec *recorder, k int, pid uint16, st subState, owed bool) {
	addr := restart(t, rec, k)
	var held map[uint16]bool
	before := 0
	switch st {
	case subPublish:
		held, before = map[uint16]bool{pid: true}, 1
	case subCompleted:
		before = 1
	}
	s := connectReceiver(t, addr, "s", held)
	pub := mqtttest.Dial(t, addr, packet.V5)
	pub.Connect(&packet.Connect{ClientID: "p", CleanStart: true})
	pub.Send(&packet.Publish{Topic: "x", QoS: 2, PacketID: 9, Payload: []byte("marker")})
	expect[*packet.Pubrec](t, pub, "PUBREC for the marker")
	s.drain(t, "marker")
	switch n := before + s.got["once"]; {
	case n > 1:
		t.Errorf("the subscriber got the message %d times in all (%d before the crash), want once", n, before)
	case n == 0 && owed:
		t.Errorf("the subscriber never got the message its publisher may have had PUBREC for")
	}
}

// runWith is run with more broker options.
func runWith(t *testing.T, opts broker.Options) string {
	t.Helper()
	opts.SysInterval, opts.Logger = -1, slog.New(slog.DiscardHandler)
	s, err := broker.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return ln.Addr().String()
}

// A retained QoS 2 message over the retained byte limit, to a topic
// nobody subscribes to, has no effect at all: PUBREC 0x97, and the packet
// id is forgotten with it (the exchange ends there). The id's removal is
// one of the publish's held ops: a crash that kept the id without it
// would answer the publisher's resend PUBREC 0x00 as a repeat, telling it
// that its message was retained.
func TestRefusedRetainedSurvivesACrashAtEveryCut(t *testing.T) {
	t.Parallel()
	const limit = 8
	rec := &recorder{}
	addr := runWith(t, broker.Options{Store: rec, MaxRetainedBytes: limit})
	offline(t, addr, "s", "y", 2)
	pub := mqtttest.Dial(t, addr, packet.V5)
	pub.Connect(persistent("p"))
	from := rec.count()
	big := &packet.Publish{Topic: "big", QoS: 2, Retain: true, PacketID: 7, Payload: []byte("more than eight bytes")}
	pub.Send(big)
	if rc := expect[*packet.Pubrec](t, pub, "PUBREC"); rc.ReasonCode != packet.QuotaExceeded {
		t.Fatalf("PUBREC 0x%02X, want 0x97", byte(rc.ReasonCode))
	}
	needPubrec := rec.acked()

	for _, k := range rec.cuts(from) {
		t.Run(fmt.Sprintf("cut%d/nothing", k), func(t *testing.T) {
			mem := store.NewMemory()
			mem.Append(rec.journal(k)...)
			addr := runWith(t, broker.Options{Store: mem, MaxRetainedBytes: limit})
			pub := mqtttest.Dial(t, addr, packet.V5)
			pub.Connect(persistent("p"))
			big.Dup = true
			pub.Send(big)
			if rc := expect[*packet.Pubrec](t, pub, "PUBREC for the resend"); rc.ReasonCode != packet.QuotaExceeded {
				t.Fatalf("PUBREC 0x%02X for the resent PUBLISH, want 0x97: nothing was retained", byte(rc.ReasonCode))
			}
		})
		if needPubrec > k {
			continue
		}
		t.Run(fmt.Sprintf("cut%d/refused", k), func(t *testing.T) {
			// The exchange is over: the id is the client's to reuse.
			mem := store.NewMemory()
			mem.Append(rec.journal(k)...)
			addr := runWith(t, broker.Options{Store: mem, MaxRetainedBytes: limit})
			pub := mqtttest.Dial(t, addr, packet.V5)
			pub.Connect(persistent("p"))
			pub.Send(&packet.Publish{Topic: "y", QoS: 2, PacketID: 7, Payload: []byte("fresh")})
			if rc := expect[*packet.Pubrec](t, pub, "PUBREC"); rc.ReasonCode >= 0x80 {
				t.Fatalf("PUBREC 0x%02X", byte(rc.ReasonCode))
			}
			s := connectReceiver(t, addr, "s", nil)
			s.drain(t, "fresh")
		})
	}
}
