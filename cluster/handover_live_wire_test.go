package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/packet"
)

// TestMoveCut walks the cut of a live move through pick and onBarrier:
// the old owner's copy takes a node's messages until that node's barrier;
// the new owner holds them from the barrier until it adopts the session,
// then takes them directly, skipping those still coming from before a
// barrier it waits for.
func TestMoveCut(t *testing.T) {
	mv := newLiveMoves(&Node{})
	gets := func(origin, id string) bool {
		p, _, _ := mv.pick(originKey{node: origin}, &broker.RemoteMessage{Topic: "a/b"}, false)
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

// TestHeldConfirmedOnceDurable: a node holding messages for a session
// moving to it confirms none of them before it adopted the session with
// them and its store has them: QoS 1 forwards of node X (after X's
// barrier) get their confirmations only then, and a QoS 1 publish on the
// node itself waits as long. Confirmed earlier, a crash of the node before
// the adoption would lose messages their publishers were told were
// delivered. What was held is queued past the session's queue limit (it
// was accepted): MaxQueued is 1 here and four are held.
func TestHeldConfirmedOnceDurable(t *testing.T) {
	n, srv := moveNode(t, 1)
	mi := &moveIn{epoch: 3, from: "A", filters: []string{"m/#"}, seen: map[string]bool{"X": true, "B": true},
		want: []string{"X", "A"}, done: make(chan struct{})}
	n.mv.in["s"] = mi
	n.mv.active.Add(1)

	msg := &broker.Message{Topic: "m/x", Payload: []byte("x"), QoS: 1}
	pub, err := encodePublish(msg)
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= 3; seq++ {
		n.deliverForward(originKey{node: "X"}, seq, encodeForward(msg, nil, pub))
	}
	held, wait := n.mv.local(&broker.Message{Topic: "m/b", Payload: []byte("b"), QoS: 1})
	if held != 1 || wait == nil {
		t.Fatalf("a publish on the node: held by %d sessions, wait %v; want 1 and a wait", held, wait != nil)
	}
	waited := make(chan error, 1)
	go func() { waited <- wait(context.Background()) }()
	select {
	case a := <-n.acks:
		t.Fatalf("forward %d confirmed while only held", a.seq)
	case err := <-waited:
		t.Fatalf("the local publish's wait ended (%v) while its message was only held", err)
	case <-time.After(50 * time.Millisecond):
	}

	rec := &broker.StoredSession{ClientID: "s", Expiry: 600, Subs: []broker.StoredSub{{Filter: "m/#", Opts: packet.SubOptions{QoS: 1}}}}
	n.gate.Lock()
	delivered, expired, last, _ := n.mv.adopt("s", mi, rec)
	n.gate.Unlock()
	if delivered != 4 || expired != 0 {
		t.Fatalf("delivered %d held messages, %d expired; want 4, 0", delivered, expired)
	}
	n.mv.release(mi, srv.WaitDurable(last))
	for want := uint64(1); want <= 3; want++ {
		select {
		case a := <-n.acks:
			if a.seq != want || !a.taken || a.origin != "X" {
				t.Errorf("confirmation %+v, want X's %d taken", a, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("forward %d not confirmed after the adoption", want)
		}
	}
	select {
	case err := <-waited:
		if err != nil {
			t.Errorf("the local publish's wait: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the local publish still waits after the adoption")
	}
	if cs, _, _ := srv.Client("s"); cs.Queued != 4 || cs.Dropped != 0 {
		t.Errorf("the session has %d queued, %d dropped; want the 4 held and none dropped (MaxQueued 1)", cs.Queued, cs.Dropped)
	}
}

// TestBarriersFollowLiveness: the new owner of a moving session asks each
// node for its barrier again while it still hears from the node, instead
// of leaving it out of the cut after one try (whose messages could then be
// lost or come twice): X, slow, answers only the second request and is
// part of the cut; Y never answers and stops being heard from (deadAfter),
// and is left out then, without waiting for barrierBound.
func TestBarriersFollowLiveness(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server not ready")
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	n := &Node{cfg: Config{Node: "B"}, log: slog.New(slog.DiscardHandler), ctx: context.Background(),
		remote: newRemoteInterest(), eng: &engine{nc: nc}}
	n.mv = newLiveMoves(n)
	for _, x := range []string{"A", "X", "Y"} {
		n.remote.heartbeat(x, "inc-"+x, 0, time.Now())
	}
	var asked atomic.Int32
	if _, err := nc.Subscribe(barrierSubject+".X", func(m *nats.Msg) {
		if asked.Add(1) > 1 { // the first request is not answered in time
			m.Respond([]byte{wireVersion, 1})
		}
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Subscribe(barrierSubject+".Y", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	time.AfterFunc(time.Second, func() { n.remote.expire(time.Now().Add(time.Hour)) })
	// Y expired, X heard again (its heartbeats go on).
	stopBeats := make(chan struct{})
	t.Cleanup(func() { close(stopBeats) })
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopBeats:
				return
			case <-tick.C:
				n.remote.heartbeat("X", "inc-X", 0, time.Now())
			}
		}
	}()
	began := time.Now()
	got := n.mv.barriers(context.Background(), &barrierRequest{id: "s", epoch: 1, from: "A", to: "B"})
	if !slices.Equal(got, []string{"X"}) {
		t.Errorf("barriers from %v, want [X] (asked X %d times)", got, asked.Load())
	}
	if took := time.Since(began); took >= barrierBound {
		t.Errorf("took %v: Y, no longer heard from, was waited for until barrierBound", took)
	}
}

// TestMoveShareGroups: a group message for a moving session's share group
// is held by the new owner whatever its origin's barrier (it reaches one
// node only) and taken out of what is delivered now; the old owner, after
// the export, passes one on to the new owner only while no member of the
// group is left with it.
func TestMoveShareGroups(t *testing.T) {
	mv := newLiveMoves(&Node{local: newLocalInterest()})
	g, other := ikey{"t/#", "g"}.groupKey(), ikey{"t/#", "h"}.groupKey()

	// New owner: "s" arriving, member of g; X's barrier has not come.
	mi := &moveIn{epoch: 1, from: "A", groups: []ikey{{"t/#", "g"}}, seen: map[string]bool{}, want: []string{"X", "A"}}
	mv.in["s"] = mi
	mv.active.Add(1)
	rm := &broker.RemoteMessage{Topic: "t/1", QoS: 1, Groups: []string{g, other}}
	if _, ha, _ := mv.pick(originKey{node: "X"}, rm, true); ha == nil || ha.left != 1 {
		t.Fatalf("group message not held back for confirmation: %+v", ha)
	}
	if len(mi.held) != 1 || mi.held[0].plain || !slices.Equal(mi.held[0].m.Groups, []string{g}) {
		t.Fatalf("held %+v, want one message for group g only", mi.held)
	}
	if !slices.Equal(rm.Groups, []string{other}) {
		t.Errorf("delivered now for groups %q, want only the other group", rm.Groups)
	}
	delete(mv.in, "s")
	mv.active.Add(-1)

	// Old owner: "s" exported to B.
	mv.exported("s", "B", 1, []broker.SubscriptionSnapshot{{Filter: "$share/g/t/#"}, {Filter: "a/b"}})
	rm = &broker.RemoteMessage{Topic: "t/1", Groups: []string{g, other}}
	if to, gk := mv.redirect(rm, "X"); to != "B" || !slices.Equal(gk, []string{g}) || !slices.Equal(rm.Groups, []string{other}) {
		t.Errorf("redirect: to %q groups %q, left %q; want B, [g], [h]", to, gk, rm.Groups)
	}
	mv.n.local.add(ikey{"t/#", "g"}) // another member of g here
	rm = &broker.RemoteMessage{Topic: "t/1", Groups: []string{g}}
	if to, _ := mv.redirect(rm, "X"); to != "" || !slices.Equal(rm.Groups, []string{g}) {
		t.Errorf("redirected to %q with a member of the group here", to)
	}
}

// TestMoveHeldDropsCounted: what a moving session does not get of what was
// held for it is counted in the node's figures (Stats, $SYS, /metrics), as
// well as logged: a message whose Message Expiry ran out while held
// [MQTT-3.3.2-5], and one past the hold's bound (maxHeld), which the
// hold refuses.
func TestMoveHeldDropsCounted(t *testing.T) {
	n, srv := moveNode(t, 0)
	mi := &moveIn{epoch: 1, from: "A", filters: []string{"m/#"}, seen: map[string]bool{}, done: make(chan struct{})}
	n.mv.in["s"] = mi
	n.mv.active.Add(1)

	long := time.Minute
	// Held for a minute: one with an expiry of a second has expired, one
	// of an hour has not, one without expiry never does.
	for _, e := range []time.Duration{time.Second, time.Hour, 0} {
		mi.held = append(mi.held, heldMessage{&broker.RemoteMessage{Topic: "m/x", Payload: []byte("x"), QoS: 1, ExpiresIn: e,
			Groups: []string{}}, originKey{}, time.Now().Add(-long), true})
	}
	// Full: the next message is refused.
	full := &moveIn{held: make([]heldMessage, maxHeld)}
	if full.hold(&broker.RemoteMessage{Topic: "m/y", QoS: 1}, originKey{}, true, nil) || full.refused != 1 {
		t.Fatalf("a hold of %d messages took one more (refused %d)", maxHeld, full.refused)
	}
	mi.refused = full.refused

	rec := &broker.StoredSession{ClientID: "s", Expiry: 600, Subs: []broker.StoredSub{{Filter: "m/#", Opts: packet.SubOptions{QoS: 1}}}}
	n.gate.Lock()
	delivered, expired, _, _ := n.mv.adopt("s", mi, rec)
	n.gate.Unlock()
	if delivered != 2 || expired != 1 {
		t.Fatalf("delivered %d held messages, %d expired; want 2, 1", delivered, expired)
	}
	if got := n.counters.heldDropped.Load(); got != 2 {
		t.Errorf("held_dropped %d, want 2 (one expired, one refused)", got)
	}
	if cs, _, _ := srv.Client("s"); cs.Queued != 2 {
		t.Errorf("the session has %d queued, want the 2 not expired", cs.Queued)
	}
}

// moveNode is a node "B" of live moves (no engine) around a broker with
// queue limit maxQueued (0: the default), for the handover's wire tests.
func moveNode(t *testing.T, maxQueued int) (*Node, *broker.Server) {
	t.Helper()
	srv, err := broker.New(broker.Options{MaxQueued: maxQueued, SysInterval: -1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	n := &Node{cfg: Config{Node: "B", ForwardTimeout: 5 * time.Second}, log: slog.New(slog.DiscardHandler),
		acks: make(chan pendingAck, 16), ctx: context.Background(), srv: srv}
	n.mv = newLiveMoves(n)
	return n, srv
}

// TestLocalHeldNamed: a QoS 2 message published on the node a session is
// moving to, held for it there, carries the copy name its forwards and
// holds carry (Node.LocalCopy): a session whose client completed another
// copy of it (its record's Seen) does not get it again. Before, the held
// copy was unnamed and delivered a second time (bench/jepsen/RESULTS.md,
// qos2dup's cause 4: `TRACE liveadopt ... origin=false`).
func TestLocalHeldNamed(t *testing.T) {
	n, srv := moveNode(t, 16)
	mi := &moveIn{epoch: 3, from: "A", filters: []string{"c/#"}, seen: map[string]bool{"B": true},
		want: []string{"A"}, done: make(chan struct{})}
	n.mv.in["s"] = mi
	n.mv.active.Add(1)
	for _, id := range []uint64{7, 8} {
		msg := &broker.Message{Topic: "c/x", Payload: []byte(fmt.Sprint("m", id)), QoS: 2, ID: id}
		if held, _ := n.mv.local(msg); held != 1 {
			t.Fatalf("message %d held by %d sessions, want 1", id, held)
		}
	}
	completed := broker.Origin{Nonce: originKey{n.cfg.Node, n.inc, 7}.copy()}.Hash()
	rec := &broker.StoredSession{ClientID: "s", Expiry: 600, Seen: []uint64{completed},
		Subs: []broker.StoredSub{{Filter: "c/#", Opts: packet.SubOptions{QoS: 2}}}}
	n.gate.Lock()
	n.mv.adopt("s", mi, rec)
	n.gate.Unlock()
	if srv.HasMessage("s", "", "c/x", []byte("m7")) {
		t.Error("message 7 queued again for a session whose client completed a copy of it")
	}
	if !srv.HasMessage("s", "", "c/x", []byte("m8")) {
		t.Error("message 8, new to the session, not queued")
	}
}

// TestAwaitInCut: a newer claim's wait for a session moving here ends at
// its bound with the move cut (the claimer is told to read the stream),
// and the move's adoption, sealed after that, learns it (adoptCut); a
// move sealed before the bound is waited for until the later bound.
func TestAwaitInCut(t *testing.T) {
	mv := newLiveMoves(&Node{log: slog.New(slog.DiscardHandler)})
	start := func(id string) *moveIn {
		mi := &moveIn{epoch: 2, in: make(chan struct{}), seen: map[string]bool{}}
		mv.mu.Lock()
		mv.in[id] = mi
		mv.mu.Unlock()
		return mi
	}

	mi := start("a")
	if cut := mv.awaitIn("a", 3, time.Now().Add(20*time.Millisecond), time.Now().Add(time.Minute)); !cut {
		t.Fatal("a move not here by the bound was not cut")
	}
	if !mv.seal(mi) || mi.cut != 3 {
		t.Fatalf("the move's adoption did not learn of the cut (cut %d)", mi.cut)
	}

	mi = start("b")
	if mv.seal(mi) {
		t.Fatal("a move nobody asked for was cut")
	}
	go func() {
		time.Sleep(50 * time.Millisecond)
		close(mi.in)
	}()
	if cut := mv.awaitIn("b", 3, time.Now().Add(time.Millisecond), time.Now().Add(time.Minute)); cut {
		t.Fatal("a move whose adoption had begun was cut")
	}
	if mi.cut != 0 || !mi.asked {
		t.Fatalf("sealed move: cut %d asked %v", mi.cut, mi.asked)
	}

	if cut := mv.awaitIn("none", 3, time.Now(), time.Now()); cut {
		t.Fatal("no move here, and cut")
	}

	// Sealed, and still not in the server at the last bound: cut, and
	// the adoption, deciding under the gate, learns of it (cutNow).
	mi = start("c")
	mv.seal(mi)
	if cut := mv.awaitIn("c", 3, time.Now().Add(time.Millisecond), time.Now().Add(20*time.Millisecond)); !cut {
		t.Fatal("a sealed move not in the server at the last bound was not cut")
	}
	if !mv.cutNow(mi) || mi.cut != 3 {
		t.Fatalf("the sealed move's adoption did not learn of the cut (cut %d)", mi.cut)
	}
}

// TestTakeMarkRegistered: a live move takes its claim's unread mark only
// once it is registered, so a release request finds the move or the mark
// (TestReproMoveUnregistered); a move whose mark a request took first is
// withdrawn, the move it replaced back in its place.
func TestTakeMarkRegistered(t *testing.T) {
	own := &owners{unread: map[string]bool{"a": true, "c": false}}
	mv := newLiveMoves(&Node{log: slog.New(slog.DiscardHandler), sess: &sessions{}, own: own})
	register := func(id string) (mi, older *moveIn) {
		mi = &moveIn{epoch: 2, in: make(chan struct{}), seen: map[string]bool{}}
		mv.mu.Lock()
		defer mv.mu.Unlock()
		older = mv.in[id]
		if older == nil {
			mv.active.Add(1)
		}
		mv.in[id] = mi
		return mi, older
	}

	mi, older := register("a")
	if !mv.takeMark("a", mi, older) || own.isUnread("a") || mv.in["a"] != mi {
		t.Fatalf("a move with its mark: taken %v, registered %v", !own.isUnread("a"), mv.in["a"] == mi)
	}
	mi, older = register("b")
	if mv.takeMark("b", mi, older) || mv.in["b"] != nil || mv.active.Load() != 1 {
		t.Fatalf("a move whose mark was taken first stayed: registered %v, active %d", mv.in["b"] != nil, mv.active.Load())
	}
	prev, _ := register("c")
	mi, older = register("c")
	if mv.takeMark("c", mi, older) || mv.in["c"] != prev || mv.active.Load() != 2 {
		t.Fatalf("the move replaced not back: %v, active %d", mv.in["c"] == prev, mv.active.Load())
	}
}

// TestSawNewerCuts: a newer record the owner watcher sees while a move is
// under way cuts the move at its adoption (cutNow) unless that claim's
// release request waits for it, and an older record or a move adopted
// already is left alone.
func TestSawNewerCuts(t *testing.T) {
	mv := newLiveMoves(&Node{log: slog.New(slog.DiscardHandler)})
	start := func(id string) *moveIn {
		mi := &moveIn{epoch: 2, in: make(chan struct{}), seen: map[string]bool{}}
		mv.mu.Lock()
		mv.in[id] = mi
		mv.mu.Unlock()
		return mi
	}

	mi := start("a")
	if mv.sawNewer("a", 2) || mv.sawNewer("a", 1) {
		t.Fatal("a record not newer than the move's claim noted")
	}
	if !mv.sawNewer("a", 3) {
		t.Fatal("a newer record not noted for the move")
	}
	if !mv.cutNow(mi) || mi.cut != 3 {
		t.Fatalf("a move whose newer claim sent no request was not cut (cut %d)", mi.cut)
	}

	// The newer claim's request waits for the move: handed the live copy.
	mi = start("b")
	go func() {
		time.Sleep(50 * time.Millisecond)
		mv.sawNewer("b", 3)
		if mv.cutNow(mi) {
			t.Error("a move whose newer claim's request waits for it was cut")
		}
		close(mi.in)
	}()
	if cut := mv.awaitIn("b", 3, time.Now().Add(time.Minute), time.Now().Add(time.Minute)); cut {
		t.Fatal("a move in by the bound was cut")
	}

	mi = start("c")
	mv.mu.Lock()
	mi.adopted = true
	mv.mu.Unlock()
	if mv.sawNewer("c", 3) {
		t.Fatal("a move adopted already noted a newer record: its session is the watcher's to fence")
	}
	if mv.sawNewer("none", 3) {
		t.Fatal("no move here, and noted")
	}
}

// TestRedirectLatestNotBack: of two sessions exported from here, both of
// a share group with no member left here, a group message goes to the
// node of the one exported last, and a reforward (groups only) not back
// to the node that passed it on while the other is elsewhere (test/jepsen
// TestClusterFull seed 46: g1 pub2#381 sent back to n2 for a move 8.9 s
// old, lost in its restored copy). Map order chose either; asked 20 times.
func TestRedirectLatestNotBack(t *testing.T) {
	mv := newLiveMoves(&Node{local: newLocalInterest()})
	g := ikey{"t/#", "g"}.groupKey()
	mv.exported("old", "n2", 0, []broker.SubscriptionSnapshot{{Filter: "$share/g/t/#"}})
	mv.exported("new", "n1", 0, []broker.SubscriptionSnapshot{{Filter: "$share/g/t/#"}})
	mv.moved["old"].at = mv.moved["new"].at.Add(-9 * time.Second)
	for range 20 {
		if to, _ := mv.redirect(&broker.RemoteMessage{Topic: "t/1", Groups: []string{g}, GroupsOnly: true}, "n2"); to != "n1" {
			t.Fatalf("a reforward from n2 went to %s, want n1 (not back, the later export)", to)
		}
		if to, _ := mv.redirect(&broker.RemoteMessage{Topic: "t/1", Groups: []string{g}}, "n3"); to != "n1" {
			t.Fatalf("a forward went to %s, want n1 (the later export)", to)
		}
		if to, _ := mv.redirect(&broker.RemoteMessage{Topic: "t/1", Groups: []string{g}, GroupsOnly: true}, "n1"); to != "n2" {
			t.Fatalf("a reforward from n1 went to %s, want n2 (not back)", to)
		}
	}
	delete(mv.moved, "new")
	if to, _ := mv.redirect(&broker.RemoteMessage{Topic: "t/1", Groups: []string{g}, GroupsOnly: true}, "n2"); to != "n2" {
		t.Errorf("a reforward with no other way went to %q, want n2 as before", to)
	}
}

// A handover that named the old owner's own held subject (namedOwn, at
// the answer) marks the move its finish exports (exported, later): the
// held group messages the follower there claims for the moved member are
// left to the new owner's read of that subject, not passed on too
// (movedTo ""). A mark of another epoch's answer does not carry over.
func TestMovedOutOwnNamedCarried(t *testing.T) {
	n, _ := moveNode(t, 0)
	mv := n.mv
	g := ikey{"t/#", "g"}.groupKey()
	subs := []broker.SubscriptionSnapshot{{Filter: "$share/g/t/#"}}

	mv.startOut("s", 5)
	mv.namedOwn("s", 5)
	mv.exported("s", "B", 5, subs)
	if to := mv.movedTo("s", g); to != "" {
		t.Errorf("own subject named at the answer: passed on to %q, want left to the new owner's read", to)
	}

	mv.startOut("u", 7)
	mv.namedOwn("u", 6) // an older answer's
	mv.exported("u", "C", 7, subs)
	if to := mv.movedTo("u", g); to != "C" {
		t.Errorf("own subject not named for this move: passed on to %q, want C", to)
	}
}
