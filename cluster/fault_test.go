package cluster

import (
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/roost-mqtt/roost/broker"
)

// Each node takes the faults that name it, several of them; an unknown
// fault is refused whichever node it names.
func TestParseFaults(t *testing.T) {
	f, err := parseFaults("stall-inbound=a@n1,read-late=b@n1,read-late=c@n2,delay-release=d@n1", "n1")
	if err != nil || f == nil || f.stallInbound != "a" || f.readLate != "b" || !f.delays("d") || f.delays("b") {
		t.Fatalf("n1: %+v, %v; want stall-inbound a, read-late b, delay-release d", f, err)
	}
	if !f.readsLate("b", 0) || !f.readsLate("b", 1) || f.readsLate("b", 0) || f.readsLate("c", 1) {
		t.Error("readsLate: b only, until orphan interest was kept and is no more")
	}
	if f, err := parseFaults("read-late=c@n2", "n3"); f != nil || err != nil {
		t.Errorf("n3: %+v, %v; want none", f, err)
	}
	if f, err := parseFaults("stall-queue=q@n1", "n1"); err != nil ||
		!f.stalls(&broker.Op{Kind: broker.OpQueuePut, ClientID: "q"}) ||
		f.stalls(&broker.Op{Kind: broker.OpQueueDel, ClientID: "q"}) ||
		f.stalls(&broker.Op{Kind: broker.OpQueuePut, ClientID: "r"}) ||
		f.stalls(&broker.Op{Kind: broker.OpInboundPut}) {
		t.Errorf("stall-queue=q: %+v, %v; want q's OpQueuePut stalled only", f, err)
	}
	if _, err := parseFaults("stall-outbound=a@n2", "n1"); err == nil {
		t.Error("an unknown fault naming another node was accepted")
	}
	f, err = parseFaults("hold-unanswered=2@n1", "n1")
	if err != nil {
		t.Fatal(err)
	}
	var unanswered int
	for range 3 {
		if u := f.unanswers(nil); u != nil {
			if err := <-u.Err(); !errors.Is(err, jetstream.ErrNoStreamResponse) {
				t.Errorf("unanswered hold: %v, want %v", err, jetstream.ErrNoStreamResponse)
			}
			unanswered++
		}
	}
	if unanswered != 2 {
		t.Errorf("hold-unanswered=2: %d holds unanswered of 3, want the first 2", unanswered)
	}
	f, err = parseFaults("adopt-wait=w@n1,settle-wait=3s@n1,adopt-wait=v@n1", "n1")
	if err != nil || !f.waitsToAdopt("w") || !f.waitsToAdopt("v") || f.waitsToAdopt("x") || f.settleDelay() != 3*time.Second ||
		f.adoptWaitLength() != adoptWait {
		t.Errorf("adopt-wait=w, settle-wait=3s: %+v, %v", f, err)
	}
	if f, err := parseFaults("adopt-wait=w@n1,adopt-wait-for=12s@n1", "n1"); err != nil || f.adoptWaitLength() != 12*time.Second {
		t.Errorf("adopt-wait-for=12s: %+v, %v", f, err)
	}
	if f, err := parseFaults("finish-asked=w@n1,finish-asked-for=15s@n1", "n1"); err != nil || f.finishAskedFor != 15*time.Second {
		t.Errorf("finish-asked-for=15s: %+v, %v", f, err)
	}
	if _, err := parseFaults("finish-asked-for=2m@n1", "n1"); err == nil {
		t.Error("finish-asked-for=2m: no error; want one (past moveLateMax)")
	}
	if _, err := parseFaults("adopt-wait-for=2m@n1", "n1"); err == nil {
		t.Error("adopt-wait-for=2m accepted, past adoptWaitMax")
	}
	if f := (*faults)(nil); f.waitsToAdopt("w") || f.settleDelay() != 0 {
		t.Error("no faults: an adoption or a settle waits")
	}
	f, err = parseFaults("ahead-unanswered=r@n1,ahead-unanswered=s@n2", "n1")
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{log: slog.New(slog.DiscardHandler)}
	member := map[string]bool{"$share/g/t/#": true}
	for i := range 2 { // every claim of r's read ahead, not the first only
		if err := f.aheadClaimUnanswered(n, "r", []string{"h\x00t/#", "g\x00t/#"}, member); !errors.Is(err, errClaim) || !errors.Is(err, jetstream.ErrNoStreamResponse) {
			t.Errorf("ahead-unanswered=r, claim %d of r's read ahead: %v, want %v and %v", i, err, errClaim, jetstream.ErrNoStreamResponse)
		}
	}
	if err := f.aheadClaimUnanswered(n, "r", []string{"h\x00t/#"}, member); err != nil {
		t.Errorf("ahead-unanswered=r: a group r is no member of: %v", err)
	}
	if err := f.aheadClaimUnanswered(n, "s", []string{"g\x00t/#"}, member); err != nil {
		t.Errorf("ahead-unanswered=s@n2: s's read ahead on n1: %v", err)
	}
	if err := (*faults)(nil).aheadClaimUnanswered(n, "r", []string{"g\x00t/#"}, member); err != nil {
		t.Errorf("no faults: %v", err)
	}
	if _, err := parseFaults("hold-elect=1h@n1", "n1"); err == nil {
		t.Error("hold-elect=1h accepted, past holdElectMax")
	}
	f, err = parseFaults("hold-elect=2s@n1", "n1")
	if err != nil {
		t.Fatal(err)
	}
	if f.electing("n3", nil) != nil {
		t.Error("hold-elect: a hold for n3 failed before n3 was dropped")
	}
	now := time.Now()
	if !f.electsFor("n3", now) || f.electsFor("n3", now.Add(time.Hour)) {
		t.Error("hold-elect: the window of n3 not opened by its first drop only")
	}
	if u := f.electing("n3", nil); u == nil {
		t.Error("hold-elect: a hold for n3 just dropped not failed")
	} else if err := <-u.Err(); !errors.Is(err, jetstream.ErrNoStreamResponse) {
		t.Errorf("hold-elect: %v, want %v", err, jetstream.ErrNoStreamResponse)
	}
	if f.electing("n2", nil) != nil {
		t.Error("hold-elect: a hold for n2, not dropped, failed")
	}
	f.electUntil.Store("n3", now.Add(-time.Millisecond))
	if f.electing("n3", nil) != nil {
		t.Error("hold-elect: a hold for n3 failed after its window")
	}
	if (*faults)(nil).electing("n3", nil) != nil || (*faults)(nil).electsFor("n3", now) {
		t.Error("no faults: a hold failed")
	}
	f, err = parseFaults("hold-paced=n3/5s@n1", "n1")
	if err != nil || f.holdPaced != "n3" || f.pacedLanding != 5*time.Second {
		t.Errorf("hold-paced=n3/5s: %+v %v", f, err)
	}
	for _, bad := range []string{"hold-unanswered=0@n1", "hold-unanswered=x@n1", "settle-wait=x@n1", "settle-wait=0s@n1", "hold-elect=0s@n1", "hold-elect=x@n1",
		"hold-paced=n3/0s@n1", "hold-paced=n3/x@n1"} {
		if _, err := parseFaults(bad, "n1"); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	f, err = parseFaults("no-quorum=e@n1", "n1")
	if err != nil {
		t.Fatal(err)
	}
	part := func(id string) int { return map[string]int{"e": 1, "f": 1, "g": 2}[id] }
	if !f.withoutQuorum(1, part) || f.withoutQuorum(2, part) {
		t.Error("no-quorum=e: e's partition (1) only, until the read")
	}
	if f.failsRead("f") || !f.failsRead("e") || f.failsRead("e") || f.withoutQuorum(1, part) {
		t.Error("no-quorum=e: the first read of e fails, and the partition is back after it")
	}
	f, err = parseFaults("held-pending=h@n1", "n1")
	if err != nil || !f.holdsHeld("h") || f.holdsHeld("e") {
		t.Errorf("held-pending=h: %+v, %v; want h only", f, err)
	}
	f, err = parseFaults("held-pending=h@n1,held-pending=i@n1,held-pending=j@n2", "n1")
	if err != nil || !f.holdsHeld("h") || !f.holdsHeld("i") || f.holdsHeld("j") {
		t.Errorf("held-pending=h,i@n1,j@n2: %+v, %v; want h and i on n1", f, err)
	}
	f, err = parseFaults("held-stall=s@n1,held-stall=t@n2", "n1")
	if err != nil {
		t.Fatalf("held-stall=s: %v", err)
	}
	if stall, first := f.stallsFollower("n2", []string{"a", "s"}); !stall || !first {
		t.Errorf("held-stall=s: a follower of s on n1 does not stall (%v) or is not logged first (%v)", stall, first)
	}
	if stall, first := f.stallsFollower("n2", []string{"s"}); !stall || first {
		t.Errorf("held-stall=s: the same follower again: stall %v, first %v; want true, false", stall, first)
	}
	if stall, _ := f.stallsFollower("n2", []string{"t"}); stall {
		t.Error("held-stall=s: a follower of t (n2's fault) stalls on n1")
	}
	f, err = parseFaults("adopt-ops-late=a@n1", "n1")
	if err != nil {
		t.Fatalf("adopt-ops-late=a: %v", err)
	}
	put := broker.Op{Kind: broker.OpSessionPut, ClientID: "a"}
	if f.holdsAdoptOp(&put, false) || f.holdsAdoptOp(&broker.Op{ClientID: "b"}, true) {
		t.Error("adopt-ops-late=a: an op held before a's first rollup, or another client's rollup held")
	}
	if !f.holdsAdoptOp(&put, true) || !f.holdsAdoptOp(&put, false) {
		t.Error("adopt-ops-late=a: a's rollup, or an op after it, not held")
	}
	f.holdAdoptOp(lateOp{op: put})
	if got := f.releaseAdoptOps("a"); len(got) != 1 || f.releaseAdoptOps("a") != nil || f.holdsAdoptOp(&put, true) {
		t.Errorf("adopt-ops-late=a: released %d ops (want 1), or again, or held after the release", len(got))
	}
	f, err = parseFaults("held-until-lost=u@n1", "n1")
	if err != nil {
		t.Fatalf("held-until-lost=u: %v", err)
	}
	lost := false
	isLost := func(id string) bool { return lost && id == "u" }
	if stall, first, after := f.stallsUntilLost("n3", []string{"u"}, isLost); !stall || !first || after {
		t.Errorf("held-until-lost=u, not lost: stall %v, first %v, after %v; want true, true, false", stall, first, after)
	}
	if stall, first, _ := f.stallsUntilLost("n3", []string{"a", "u"}, isLost); !stall || first {
		t.Errorf("held-until-lost=u, not lost, again: stall %v, first %v; want true, false", stall, first)
	}
	if stall, _, _ := f.stallsUntilLost("n3", []string{"a"}, isLost); stall {
		t.Error("held-until-lost=u: a follower without u stalls")
	}
	lost = true
	if stall, _, after := f.stallsUntilLost("n3", []string{"u"}, isLost); stall || !after {
		t.Errorf("held-until-lost=u, lost: stall %v, after %v; want false, true", stall, after)
	}
	if stall, _, after := f.stallsUntilLost("n3", []string{"u"}, isLost); stall || after {
		t.Errorf("held-until-lost=u, lost, again: stall %v, after %v; want false, false", stall, after)
	}
	f, err = parseFaults("release-late=l@n1,held-fenced=h@n1,held-fenced=x@n2", "n1")
	if err != nil || !f.handlesLate("l") || f.handlesLate("h") || !f.holdsUntilFenced("h") || f.holdsUntilFenced("x") {
		t.Errorf("release-late=l,held-fenced=h: %+v, %v; want l late, h held until fenced, on n1 only", f, err)
	}
	if f, err := parseFaults("answer-late=a@n2,answer-late=b@n1", "n2"); err != nil || !f.answersLate("a") || f.answersLate("b") {
		t.Errorf("answer-late=a@n2: %+v, %v; want a late on n2 only", f, err)
	}
	f.fenced("l") // another id: the wait for h goes on
	select {
	case <-f.fenceDone:
		t.Error("held-fenced=h: the wait ended by a fence of another id")
	default:
	}
	f.fenced("h")
	f.fenced("h")                           // twice: no panic
	f.awaitFence(time.Now().Add(time.Hour)) // returns at once: h was fenced
	f, err = parseFaults("overtaken=o@n1", "n1")
	if err != nil || !f.overtakes("o") || f.overtakes("h") {
		t.Fatalf("overtaken=o: %+v, %v; want o only", f, err)
	}
	f.sawRecord("h") // another id: the wait for o goes on
	select {
	case <-f.recordSeen:
		t.Error("overtaken=o: a record of h ended o's wait")
	default:
	}
	f.sawRecord("o")
	f.sawRecord("o") // once only
	f.awaitRecord("o")
	f, err = parseFaults("move-late=m@n1", "n1")
	if err != nil || !f.movesLate("m") || f.movesLate("o") {
		t.Fatalf("move-late=m: %+v, %v; want m only", f, err)
	}
	f.askedRelease("o") // another id: the wait for m goes on
	select {
	case <-f.asked:
		t.Error("move-late=m: a release request for o ended m's wait")
	default:
	}
	f.askedRelease("m")
	f.askedRelease("m") // once only
	f.awaitAsked()
	var none *faults
	if none.readsLate("b", 1) || none.stalls(nil) || none.delays("d") || none.unanswers(nil) != nil ||
		none.withoutQuorum(0, func(string) int { return 0 }) || none.failsRead("e") || none.holdsHeld("h") || none.overtakes("o") ||
		none.movesLate("m") || none.losesRollup("r", nil) != nil {
		t.Error("no faults: nothing injected")
	}
	f, err = parseFaults("rollup-lost=r@n1", "n1")
	if err != nil {
		t.Fatal(err)
	}
	if f.losesRollup("s", nil) != nil || f.losesRollup("r", nil) == nil || f.losesRollup("r", nil) != nil {
		t.Error("rollup-lost=r: r's first rollup only")
	}
	f, err = parseFaults("ops-after-rollup=r@n1", "n1")
	if err != nil {
		t.Fatal(err)
	}
	partR := func(id string) int { return map[string]int{"r": 3}[id] }
	if f.pausesAfterRollup("s") || !f.pausesAfterRollup("r") || f.pausesAfterRollup("r") {
		t.Error("ops-after-rollup=r: the append of r's first rollup only is held")
	}
	if held, _ := f.holdsAfterRollup(3, partR); held {
		t.Error("ops-after-rollup=r: held before r's rollup was acknowledged")
	}
	f.ackedRollup("s")
	f.ackedRollup("r")
	if held, first := f.holdsAfterRollup(3, partR); !held || !first {
		t.Errorf("ops-after-rollup=r: after r's rollup, held %v first %v; want both", held, first)
	}
	if held, first := f.holdsAfterRollup(3, partR); !held || first {
		t.Errorf("ops-after-rollup=r: again, held %v first %v; want held only", held, first)
	}
	if held, _ := f.holdsAfterRollup(0, partR); held {
		t.Error("ops-after-rollup=r: another partition held")
	}
	if held, _ := (*faults)(nil).holdsAfterRollup(3, partR); held {
		t.Error("no faults: ops held")
	}
}
