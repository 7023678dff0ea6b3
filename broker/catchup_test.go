package broker

import (
	"cmp"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// queuedOrder returns the payloads of clientID's queued deliveries as a
// store rebuilds them from l's ops: the live entries in sequence order.
func (l *idLog) queuedOrder(clientID string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	live := map[uint64]string{}
	for _, op := range l.ops {
		if op.ClientID != clientID {
			continue
		}
		switch op.Kind {
		case OpQueuePut:
			live[op.Delivery.Seq] = string(op.Delivery.Msg.Payload)
		case OpQueueDel:
			delete(live, op.Delivery.Seq)
		}
	}
	seqs := make([]uint64, 0, len(live))
	for seq := range live {
		seqs = append(seqs, seq)
	}
	slices.SortFunc(seqs, cmp.Compare[uint64])
	out := make([]string, 0, len(seqs))
	for _, seq := range seqs {
		out = append(out, live[seq])
	}
	return out
}

// TestCatchUpLateAhead: a session catching up (CatchUp), its client
// connected, is sent nothing new until end; then what was held for it
// (Late) comes ahead of what was forwarded meanwhile, behind only the
// older messages of its own publisher (Place), and the store holds the
// queue in that order too (a restart, or a node reading the session's
// record, rebuilds it by sequence). Without the catch-up the forwarded
// messages went out as they came, ahead of older held ones: out of
// publication order per publisher and topic [MQTT-4.6.0-5].
func TestCatchUpLateAhead(t *testing.T) {
	t.Parallel()
	st := &idLog{}
	s, addr := startServer(t, Options{Store: st})
	s.Adopt(&StoredSession{ClientID: "cu", Expiry: 600,
		Subs:  []StoredSub{{Filter: "t/#", Opts: packet.SubOptions{QoS: 1}}},
		Queue: []StoredDelivery{{Seq: 1, QoS: 1, Msg: &Message{Topic: "t/a", Payload: []byte("queued"), QoS: 1}}}})
	end := s.CatchUp("cu")
	if end == nil {
		t.Fatal("CatchUp found no session")
	}
	c := dial(t, addr, packet.V5)
	if ack := c.Connect(&packet.Connect{ClientID: "cu", KeepAlive: 30,
		Properties: packet.Properties{Present: 1 << packet.PropSessionExpiry, SessionExpiry: 600}}); !ack.SessionPresent {
		t.Fatal("CONNACK without Session Present")
	}
	deliver := func(payload, src string, seq uint64, late bool) {
		t.Helper()
		n, _ := s.DeliverRemote(&RemoteMessage{Topic: "t/a", Payload: []byte(payload), QoS: 1,
			Place: Place{Source: src, Seq: seq}, Late: late, Accepted: late})
		if n != 1 {
			t.Fatalf("%s went to %d sessions, want 1", payload, n)
		}
	}
	// Forwarded while catching up.
	deliver("fP5", "P", 5, false)
	deliver("fQ1", "Q", 1, false)
	deliver("fP6", "P", 6, false)
	deliver("f?", "", 0, false) // no place known
	// Held, read after: older than P's forwards, newer than P's 6, from
	// another publisher, and of no known place.
	deliver("hP3", "P", 3, true)
	deliver("hP7", "P", 7, true)
	deliver("hR2", "R", 2, true)
	deliver("h?", "", 0, true)
	// Held for two nodes, one publisher's come out of order: in order.
	deliver("hS5", "S", 5, true)
	deliver("hS4", "S", 4, true)
	want := []string{"queued", "hP3", "hR2", "h?", "hS4", "hS5", "fP5", "fQ1", "fP6", "hP7", "f?"}
	if got := st.queuedOrder("cu"); !slices.Equal(got, want) {
		t.Errorf("store order %v, want %v", got, want)
	}
	end()
	end() // again: nothing more
	expectSent(t, c, want)
	// Caught up: sent at once again.
	deliver("after", "P", 8, false)
	p, err := c.Read(5 * time.Second)
	if pub, ok := p.(*packet.Publish); err != nil || !ok || string(pub.Payload) != "after" {
		t.Errorf("after the catch-up: %v %v, want the PUBLISH of \"after\"", p, err)
	}
}

// TestCatchUpNoRoom: a Late message with no store sequence left at its
// place (the gap before a forwarded message used up; catchGap and
// catchStep, made 4 and 1 here) still goes there: the messages from its
// place on take new sequences past the end (respace), in memory and in
// the store alike. Before, it went last, behind newer messages, and
// every newer Late one of its publisher behind it
// (TestReproFenceWindowLifted under load: 62 messages after newer ones).
func TestCatchUpNoRoom(t *testing.T) {
	t.Parallel()
	st := &idLog{}
	s, _ := startServer(t, Options{Store: st})
	s.Adopt(&StoredSession{ClientID: "cu", Expiry: 600,
		Subs: []StoredSub{{Filter: "t/#", Opts: packet.SubOptions{QoS: 1}}}})
	end := s.CatchUp("cu")
	s.mu.Lock()
	ss := s.sessions["cu"]
	s.mu.Unlock()
	ss.mu.Lock()
	ss.in2.catch.gap, ss.in2.catch.step = 4, 1
	ss.mu.Unlock()
	deliver := func(payload string, p Place, late bool) {
		s.DeliverRemote(&RemoteMessage{Topic: "t/a", Payload: []byte(payload), QoS: 1, Place: p, Late: late, Accepted: late})
	}
	deliver("f1", Place{"P", 10}, false)
	deliver("f2", Place{"P", 11}, false)
	for _, h := range []string{"h1", "h2", "h3", "h4"} { // room for 3 before f1
		deliver(h, Place{"Q", 1}, true)
	}
	deliver("h5", Place{"Q", 2}, true) // after h4, its publisher's older one
	want := []string{"h1", "h2", "h3", "h4", "h5", "f1", "f2"}
	if got := st.queuedOrder("cu"); !slices.Equal(got, want) {
		t.Errorf("store order %v, want %v", got, want)
	}
	ss.mu.Lock()
	var mem []string
	for _, ob := range ss.queue[ss.qhead:] {
		mem = append(mem, string(ob.msg.Payload))
	}
	ss.mu.Unlock()
	if !slices.Equal(mem, want) {
		t.Errorf("queue order %v, want %v", mem, want)
	}
	end()
}

// TestCatchUpRoomBehindNewer: a Late message read before its publisher's
// older ones (held for two nodes, or appended out of order) goes ahead of
// the forwarded messages, and the older ones then go before it, one after
// another: each behind the last, before that newer one. Their store
// sequences must not run out there in a read's worth of messages: each
// took half of the room left before the newer one, which had taken
// catchStep past its predecessor, so the 9th found none and the queue
// from its place on was journalled again at new sequences (respace).
// TestReproFenceWindowLifted's "given new store sequences to make room"
// at the 16th held message its follower read.
func TestCatchUpRoomBehindNewer(t *testing.T) {
	t.Parallel()
	st := &idLog{}
	s, _ := startServer(t, Options{Store: st})
	s.Adopt(&StoredSession{ClientID: "cu", Expiry: 600,
		Subs: []StoredSub{{Filter: "t/#", Opts: packet.SubOptions{QoS: 1}}}})
	end := s.CatchUp("cu")
	defer end()
	deliver := func(payload string, p Place, late bool) {
		s.DeliverRemote(&RemoteMessage{Topic: "t/a", Payload: []byte(payload), QoS: 1, Place: p, Late: late, Accepted: late})
	}
	deliver("f", Place{"P", 2000}, false)
	deliver("h1500", Place{"P", 1500}, true)
	want := []string{}
	for i := range 1000 {
		p := fmt.Sprintf("h%d", i)
		deliver(p, Place{"P", uint64(i)}, true)
		want = append(want, p)
	}
	want = append(want, "h1500", "f")
	if got := st.queuedOrder("cu"); !slices.Equal(got, want) {
		t.Errorf("store order %v, want %v", got, want)
	}
	st.mu.Lock()
	moved := 0
	for _, op := range st.ops {
		if op.Kind == OpQueueDel {
			moved++
		}
	}
	st.mu.Unlock()
	if moved > 0 {
		t.Errorf("%d queued messages journalled again at new store sequences; want room for 1000 older ones", moved)
	}
}

// TestCatchUpJoined: a CatchUp while the session catches up already
// joins that catch-up. A Late message delivered after the second CatchUp
// goes ahead of what was forwarded since the first, and nothing is sent
// until both ends were called. Before, the second CatchUp began a new
// catch-up that knew nothing of the forwards before it, and the held
// message went behind them (a restarted node's restored share group
// member catching up from its restore and again from its settle:
// test/jepsen TestClusterFull seed 58, 2026-12-06).
func TestCatchUpJoined(t *testing.T) {
	t.Parallel()
	st := &idLog{}
	s, addr := startServer(t, Options{Store: st})
	s.Adopt(&StoredSession{ClientID: "cj", Expiry: 600,
		Subs: []StoredSub{{Filter: "t/#", Opts: packet.SubOptions{QoS: 1}}}})
	first := s.CatchUp("cj")
	deliver := func(payload string, seq uint64, late bool) {
		t.Helper()
		n, _ := s.DeliverRemote(&RemoteMessage{Topic: "t/a", Payload: []byte(payload), QoS: 1,
			Place: Place{Source: "P", Seq: seq}, Late: late, Accepted: late})
		if n != 1 {
			t.Fatalf("%s went to %d sessions, want 1", payload, n)
		}
	}
	deliver("f9", 9, false) // forwarded before the second CatchUp
	second := s.CatchUp("cj")
	first()
	first()                // again: it counts once
	deliver("h3", 3, true) // held, read after: older
	c := dial(t, addr, packet.V5)
	if ack := c.Connect(&packet.Connect{ClientID: "cj", KeepAlive: 30,
		Properties: packet.Properties{Present: 1 << packet.PropSessionExpiry, SessionExpiry: 600}}); !ack.SessionPresent {
		t.Fatal("CONNACK without Session Present")
	}
	if p, err := c.Read(300 * time.Millisecond); err == nil {
		t.Fatalf("sent %v before the second CatchUp's end", p)
	}
	want := []string{"h3", "f9"}
	if got := st.queuedOrder("cj"); !slices.Equal(got, want) {
		t.Errorf("store order %v, want %v", got, want)
	}
	second()
	expectSent(t, c, want)
}

// TestCatchUpAdoptedAnchors: the adopted queue's messages not sent yet
// keep their places through the catch-up, so that a Late message goes
// before a queued one of its own publisher that is newer, wherever the
// adoption put it. The queue is what the previous owner had (a live
// handover, a record read from the stream): there, forwards newer than
// what was held for that node while it was silent; here, the held ones
// read after. Before, the adopted messages had no place and every Late
// one went behind the whole adopted queue, its publisher's newer
// messages included (bench/jepsen/RESULTS.md, Session 26, long faults
// seed 605: ps0 got pub1#451-#458 after #459-#466; TestReproPausedOwnerMovesLive).
func TestCatchUpAdoptedAnchors(t *testing.T) {
	t.Parallel()
	st := &idLog{}
	s, addr := startServer(t, Options{Store: st})
	queued := func(payload string, p Place) StoredDelivery {
		m := &Message{Topic: "t/a", Payload: []byte(payload), QoS: 1}
		m.SetPlace(p)
		return StoredDelivery{QoS: 1, Msg: m}
	}
	s.Adopt(&StoredSession{ClientID: "ca", Expiry: 600,
		Subs: []StoredSub{{Filter: "t/#", Opts: packet.SubOptions{QoS: 1}}},
		Queue: []StoredDelivery{
			queued("qP5", Place{"P", 5}), queued("q?", Place{}),
			queued("qQ7", Place{"Q", 7}), queued("qP6", Place{"P", 6}),
		}})
	end := s.CatchUp("ca")
	c := dial(t, addr, packet.V5)
	if ack := c.Connect(&packet.Connect{ClientID: "ca", KeepAlive: 30,
		Properties: packet.Properties{Present: 1 << packet.PropSessionExpiry, SessionExpiry: 600}}); !ack.SessionPresent {
		t.Fatal("CONNACK without Session Present")
	}
	deliver := func(payload string, p Place, late bool) {
		t.Helper()
		n, _ := s.DeliverRemote(&RemoteMessage{Topic: "t/a", Payload: []byte(payload), QoS: 1, Place: p, Late: late, Accepted: late})
		if n != 1 {
			t.Fatalf("%s went to %d sessions, want 1", payload, n)
		}
	}
	deliver("fP9", Place{"P", 9}, false) // forwarded during the catch-up
	// Held, read after: older than P's queued 5, between P's 5 and 6,
	// older than Q's queued 7, newer than all of P's, of another source.
	deliver("hP3", Place{"P", 3}, true)
	deliver("hP4", Place{"P", 4}, true)
	deliver("hQ6", Place{"Q", 6}, true)
	deliver("hP8", Place{"P", 8}, true)
	deliver("hR1", Place{"R", 1}, true)
	want := []string{"hP3", "hP4", "qP5", "q?", "hQ6", "qQ7", "qP6", "hP8", "hR1", "fP9"}
	if got := st.queuedOrder("ca"); !slices.Equal(got, want) {
		t.Errorf("store order %v, want %v", got, want)
	}
	end()
	expectSent(t, c, want)
}

// expectSent reads from c until it got as many PUBLISHes as want and
// fails t unless their payloads are want, in order.
func expectSent(t *testing.T, c *mqtttest.Client, want []string) {
	t.Helper()
	var got []string
	for len(got) < len(want) {
		p, err := c.Read(5 * time.Second)
		if err != nil {
			t.Fatalf("after %v: %v", got, err)
		}
		if pub, ok := p.(*packet.Publish); ok {
			got = append(got, string(pub.Payload))
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("sent %v, want %v", got, want)
	}
}
