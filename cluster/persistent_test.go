package cluster

import (
	"slices"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
)

// The persistent filter keys follow the journaled ops: one per plain
// filter and one per share group and filter while any persistent session
// has it, gone with the last session's OpSubDel / OpSessionDel or leave.
func TestPersistentFilters(t *testing.T) {
	l := newLocalInterest()
	p := newPersistentFilters(l)
	sub := func(kind broker.OpKind, id, f string) {
		p.apply(&broker.Op{Kind: kind, ClientID: id, Sub: broker.StoredSub{Filter: f}})
	}
	sub(broker.OpSubPut, "a", "t/#")
	sub(broker.OpSubPut, "a", "t/#") // replaced, not a second holder
	sub(broker.OpSubPut, "b", "t/#")
	sub(broker.OpSubPut, "a", "$share/g/s/#")
	p.restore(&broker.StoredSession{ClientID: "c", Subs: []broker.StoredSub{{Filter: "r"}, {Filter: "$share/g/r"}}})
	want := func(step string, keys ...string) {
		t.Helper()
		got, _ := l.snapshot()
		var fs []string
		for _, k := range got {
			if !k.isPersist() {
				t.Fatalf("%s: a plain key %v among the persistent ones", step, k)
			}
			if g := k.orphanKey().group; g != "" {
				fs = append(fs, "$share/"+g+"/"+k.filter)
			} else {
				fs = append(fs, k.filter)
			}
		}
		slices.Sort(fs)
		if !slices.Equal(fs, keys) {
			t.Fatalf("%s: persistent filters %v, want %v", step, fs, keys)
		}
	}
	want("subscribed", "$share/g/r", "$share/g/s/#", "r", "t/#")
	sub(broker.OpSubDel, "a", "t/#")
	want("a unsubscribed, b still has it", "$share/g/r", "$share/g/s/#", "r", "t/#")
	p.apply(&broker.Op{Kind: broker.OpSessionDel, ClientID: "b"})
	want("b ended", "$share/g/r", "$share/g/s/#", "r")
	sub(broker.OpSubDel, "b", "r") // not b's: nothing changes
	want("b never had r", "$share/g/r", "$share/g/s/#", "r")
	sub(broker.OpSubDel, "a", "$share/g/s/#")
	want("a left the group", "$share/g/r", "r")
	p.leave("c")
	want("c left")
}

// A persistent filter key reaches a peer's keys but not its routing
// tree; when the peer's routes close it, and only it, becomes the peer's
// orphan interest, and a forward out to it is held only if it matches.
func TestPersistKeyRemote(t *testing.T) {
	r := newRemoteInterest()
	now := time.Now()
	r.seen("n3", now)
	r.applySnapshot("n3", "i1", 3, []ikey{{"p/#", ""}, persistKey("p/#"), {"c/#", ""}}, true)
	l := newLocalInterest()
	for _, name := range []string{"p/x", "c/x"} {
		if got := r.plan(name, 1, l); len(got) != 1 || got[0].node != "n3" || len(got[0].groups) != 0 {
			t.Fatalf("plan %s: %+v, want n3 without groups", name, got)
		}
	}
	if r.orphans.match("p/x") != nil {
		t.Fatal("orphan interest while n3 is alive")
	}
	r.forgetUnrouted(map[string]bool{})
	if got := r.plan("p/x", 1, l); got != nil {
		t.Fatalf("plan after n3's loss: %+v", got)
	}
	if got := r.orphans.match("p/x"); len(got) != 1 || got[0].node != "n3" || !got[0].plain {
		t.Errorf("p/x: orphans %v, want n3", got)
	}
	if got := r.orphans.match("c/x"); got != nil {
		t.Errorf("c/x (clean subscribers only) held for %v", got)
	}
	n := &Node{remote: r}
	if err := n.holdForGone(t.Context(), "n3", &broker.Message{Topic: "c/x", QoS: 1}, nil, broker.Origin{}, nil); err != nil {
		t.Errorf("forward for n3's clean subscribers only: %v, want acknowledged", err)
	}
}
