package cluster

import (
	"log/slog"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/packet"
	"github.com/roost-mqtt/roost/store"
)

// sparedNode starts a node's sessions and broker over own, its own store,
// as a restart does (Load), with the hold keys' timers left to the test
// (due).
func sparedNode(t *testing.T, own broker.Store, due *[]func()) *sessions {
	t.Helper()
	n := &Node{cfg: Config{Node: "n2", Partitions: 2}, local: newLocalInterest(), log: slog.New(slog.DiscardHandler)}
	s := n.Sessions(own).(*sessions)
	s.persist.after = func(_ time.Duration, f func()) { *due = append(*due, f) }
	srv, err := broker.New(broker.Options{Store: s, SysInterval: -1, Logger: n.log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(t.Context()) })
	n.srv = srv
	return s
}

// subsOf returns the filters of id's record in own, nil if it has none.
func subsOf(t *testing.T, own broker.Store, id string) []string {
	t.Helper()
	st, err := own.Load()
	if err != nil {
		t.Fatal(err)
	}
	for _, ss := range st.Sessions {
		if ss.ClientID == id {
			out := []string{}
			for _, sub := range ss.Subs {
				out = append(out, sub.Filter)
			}
			return out
		}
	}
	return nil
}

// A restored copy dropped at start (owned elsewhere) keeps its record in
// the node's own store while its hold keys cover the claimer: a restart
// within the cover restores it, drops it again and puts its keys out
// again; the cover's end deletes it, and the restart after finds nothing.
// Before, the record went at the drop, and a node killed twice in a claim
// chain whose reads failed came back without the keys: nobody held for the
// session (test/jepsen TestClusterFull seed 548: 32 lost;
// TestReproDroppedCopyKilled).
func TestDroppedCopyRecordKeptForCover(t *testing.T) {
	own := store.NewMemory()
	own.Append(broker.Op{Kind: broker.OpSessionPut, ClientID: "d", Session: broker.StoredSession{ClientID: "d", Expiry: 300}},
		broker.Op{Kind: broker.OpSubPut, ClientID: "d", Sub: broker.StoredSub{Filter: "t/#", Opts: packet.SubOptions{QoS: 1}}})

	for restart := range 2 {
		var due []func()
		s := sparedNode(t, own, &due)
		if len(s.restored) != 1 {
			t.Fatalf("restart %d: restored %v, want the dropped copy", restart, s.restored)
		}
		s.disown("d")
		if !s.dropRestored("d") {
			t.Fatalf("restart %d: the restored copy was not in the server", restart)
		}
		if got := subsOf(t, own, "d"); len(got) != 1 {
			t.Fatalf("restart %d: the own store's record after the drop: %v, want it kept with t/#", restart, got)
		}
		if len(s.persist.holdMatches("t/x")) == 0 {
			t.Fatalf("restart %d: no hold key out for the dropped copy", restart)
		}
		if restart == 0 {
			continue // killed within the cover: its timers die with it
		}
		for len(due) > 0 {
			f := due[0]
			due = due[1:]
			f()
		}
		if len(s.persist.holdMatches("t/x")) != 0 {
			t.Fatal("the hold keys outlived the cover")
		}
		if got := subsOf(t, own, "d"); got != nil {
			t.Fatalf("the record outlived the cover: %v", got)
		}
	}
	var due []func()
	if s := sparedNode(t, own, &due); len(s.restored) != 0 {
		t.Fatalf("a restart after the cover's end restored %v", s.restored)
	}
}

// The kept record of a dropped copy goes before anything else of its id
// reaches the own store (a session adopted here is not merged into it),
// and at a claim here (unspare, before the owner record names this node:
// a restart would take the stale copy for this node's own); a copy
// dropped while a claim of its id here had begun is not kept at all.
func TestDroppedCopyRecordEndsFirst(t *testing.T) {
	own := store.NewMemory()
	for _, id := range []string{"a", "c", "k"} {
		own.Append(broker.Op{Kind: broker.OpSessionPut, ClientID: id, Session: broker.StoredSession{ClientID: id, Expiry: 300}},
			broker.Op{Kind: broker.OpSubPut, ClientID: id, Sub: broker.StoredSub{Filter: "old/#"}})
	}
	var due []func()
	s := sparedNode(t, own, &due)
	// "k" is claimed here (its epoch noted) before the drop: its record
	// may name this node already, and the copy is not kept.
	s.n.own = &owners{n: s.n, epochs: map[string]epochAt{"k": {epoch: 5, at: time.Now()}}}
	for _, id := range []string{"a", "c", "k"} {
		s.disown(id)
		s.dropRestored(id)
	}
	if got := subsOf(t, own, "k"); got != nil {
		t.Errorf("a copy dropped while a claim of its id here ran was kept: %v", got)
	}

	// "a" adopted here: its new record alone.
	s.Append(broker.Op{Kind: broker.OpSessionPut, ClientID: "a", Session: broker.StoredSession{ClientID: "a", Expiry: 300}},
		broker.Op{Kind: broker.OpSubPut, ClientID: "a", Sub: broker.StoredSub{Filter: "new/#"}})
	if got := subsOf(t, own, "a"); len(got) != 1 || got[0] != "new/#" {
		t.Errorf("the record of a session adopted after its copy's drop: %v, want [new/#] alone", got)
	}
	if s.unspare("a") {
		t.Error("the adopted session's record taken for the dropped copy's")
	}

	// "c" claimed here.
	if !s.unspare("c") {
		t.Fatal("no kept record for a claim to end")
	}
	if got := subsOf(t, own, "c"); got != nil {
		t.Errorf("the dropped copy's record after a claim here: %v", got)
	}
	if s.unspare("c") {
		t.Error("ended twice")
	}
}
