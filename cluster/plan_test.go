package cluster

import (
	"slices"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
)

// TestPlanLeavesHeldGroupNode: a share group whose members are on a node
// that holds for the group (a hold key: a restarted node's unsettled
// member) and on one that does not goes to the second only, so that its
// members get each publisher's messages one way (serving); with no other
// node, or every node holding, the turns are as before.
func TestPlanLeavesHeldGroupNode(t *testing.T) {
	now := time.Now()
	group := ikey{"t/#", "g0"}
	hold := persistShareKey("t/#", "g0").holdKey()
	for _, tt := range []struct {
		name  string
		nodes map[string][]ikey
		want  []string // the nodes that serve g0 over ten ids
	}{
		{"held and live", map[string][]ikey{"n2": {group, hold}, "n3": {group}}, []string{"n3"}},
		{"held only", map[string][]ikey{"n2": {group, hold}}, []string{"n2"}},
		{"all held", map[string][]ikey{"n2": {group, hold}, "n3": {group, hold}}, []string{"n2", "n3"}},
		{"none held", map[string][]ikey{"n2": {group}, "n3": {group}}, []string{"n2", "n3"}},
		{"held, another group's", map[string][]ikey{"n2": {group, persistShareKey("t/#", "g1").holdKey()}, "n3": {group}}, []string{"n2", "n3"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newRemoteInterest()
			for node, keys := range tt.nodes {
				r.applySnapshotFor(t, node, keys, now)
			}
			var served []string
			for id := range uint64(10) {
				targets, left := r.planHeld("t/1", id, newLocalInterest(), nil)
				var to []string
				for _, tg := range targets {
					if slices.Contains(tg.groups, group.groupKey()) {
						to = append(to, tg.node)
					}
				}
				if len(to) != 1 {
					t.Fatalf("id %d: g0 planned to %v, want one node", id, to)
				}
				if !slices.Contains(served, to[0]) {
					served = append(served, to[0])
				}
				if wantLeft := tt.name == "held and live"; (len(left) > 0) != wantLeft {
					t.Errorf("id %d: left out %q", id, left)
				}
			}
			slices.Sort(served)
			if !slices.Equal(served, tt.want) {
				t.Errorf("g0 served by %v, want %v", served, tt.want)
			}
		})
	}
}

// TestPlanLeavesAwayGroupNode: a share group whose members on a node are
// disowned copies (an away key: the copy's session is moving or served
// elsewhere) goes to another node with a member, so that the member gets
// each publisher's messages one way (serving); with no other node, or
// every node's members away, the turns are as before. Hold keys are
// applied first. The key withdrawn (by a delta) or its node forgotten,
// the node takes its turns again.
func TestPlanLeavesAwayGroupNode(t *testing.T) {
	now := time.Now()
	group := ikey{"t/#", "g0"}
	away := awayKey(group)
	hold := persistShareKey("t/#", "g0").holdKey()
	served := func(t *testing.T, r *remoteInterest) []string {
		t.Helper()
		var out []string
		for id := range uint64(10) {
			for _, tg := range r.plan("t/1", id, newLocalInterest()) {
				if slices.Contains(tg.groups, group.groupKey()) && !slices.Contains(out, tg.node) {
					out = append(out, tg.node)
				}
			}
		}
		slices.Sort(out)
		return out
	}
	for _, tt := range []struct {
		name  string
		nodes map[string][]ikey
		want  []string
	}{
		{"away and live", map[string][]ikey{"n2": {group, away}, "n3": {group}}, []string{"n3"}},
		{"away only", map[string][]ikey{"n2": {group, away}}, []string{"n2"}},
		{"all away", map[string][]ikey{"n2": {group, away}, "n3": {group, away}}, []string{"n2", "n3"}},
		{"away, another group's", map[string][]ikey{"n2": {group, awayKey(ikey{"t/#", "g1"})}, "n3": {group}}, []string{"n2", "n3"}},
		{"away and held", map[string][]ikey{"n2": {group, away}, "n3": {group, hold}}, []string{"n2"}},
		{"away, held and live", map[string][]ikey{"n2": {group, away}, "n3": {group, hold}, "n4": {group}}, []string{"n4"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newRemoteInterest()
			for node, keys := range tt.nodes {
				r.applySnapshotFor(t, node, keys, now)
			}
			if got := served(t, r); !slices.Equal(got, tt.want) {
				t.Errorf("g0 served by %v, want %v", got, tt.want)
			}
		})
	}
	r := newRemoteInterest()
	r.applySnapshotFor(t, "n2", []ikey{group}, now)
	r.applySnapshotFor(t, "n3", []ikey{group}, now)
	if fetch, _ := r.applyDeltas("n2", "inc", []delta{{seq: 2, add: true, key: away}}, now); fetch {
		t.Fatal("delta: fetch")
	}
	if got := served(t, r); !slices.Equal(got, []string{"n3"}) {
		t.Errorf("away key announced: g0 served by %v, want [n3]", got)
	}
	if keys := nodesFor(r, "t/1"); !slices.Equal(keys, []string{"n2", "n3"}) {
		t.Errorf("routing tree has %v for t/1, want [n2 n3]: an away key routes nothing", keys)
	}
	r.applyDeltas("n2", "inc", []delta{{seq: 3, add: false, key: away}}, now)
	if got := served(t, r); !slices.Equal(got, []string{"n2", "n3"}) {
		t.Errorf("away key withdrawn: g0 served by %v, want [n2 n3]", got)
	}
	r.applyDeltas("n2", "inc", []delta{{seq: 4, add: true, key: away}}, now)
	r.mu.Lock()
	r.forget(r.peers["n2"])
	r.mu.Unlock()
	if n := r.away.count.Load(); n != 0 {
		t.Errorf("n2 forgotten: %d nodes with away keys, want 0", n)
	}
}

// TestAwayKeysFollowTheCopy: a disowned copy's share groups are announced
// by away keys, once however often it is disowned, also those its
// adoption brings after the disown, and withdrawn when it is no longer
// one; a copy without persistent keys announces none.
func TestAwayKeysFollowTheCopy(t *testing.T) {
	l := newLocalInterest()
	p := newPersistentFilters(l)
	p.add("m", persistShareKey("t/#", "g0"))
	p.add("m", persistKey("a/b"))
	p.add("other", persistShareKey("t/#", "g0"))
	p.awayOn("m")
	p.awayOn("m")
	p.awayOn("none")
	away := awayKey(ikey{"t/#", "g0"})
	if n := l.count(away); n != 1 {
		t.Fatalf("away key announced %d times, want once", n)
	}
	keys, _ := l.snapshot()
	if got := slices.DeleteFunc(keys, func(k ikey) bool { return !k.isAway() }); !slices.Equal(got, []ikey{away}) {
		t.Errorf("away keys %q, want %q", got, []ikey{away})
	}
	if k := away.awayOf(); k != (ikey{"t/#", "g0"}) {
		t.Errorf("awayOf = %q, want the group's key", k)
	}
	p.awayOff("m")
	if l.has(away) {
		t.Error("away key still out after awayOff")
	}
	p.awayOn("m")
	p.leave("m")
	if l.has(away) {
		t.Error("away key still out after leave")
	}
	// Disowned before its adoption here brought its subscriptions
	// (adoptCut): the keys come with them.
	p.awayOn("late")
	p.add("late", persistShareKey("u/#", "g2"))
	if !l.has(awayKey(ikey{"u/#", "g2"})) {
		t.Error("a copy adopted after its disown: no away key for its group")
	}
	p.awayOff("late")
	if l.has(awayKey(ikey{"u/#", "g2"})) {
		t.Error("away key still out after awayOff")
	}
	p.add("late", persistShareKey("v/#", "g3"))
	if l.has(awayKey(ikey{"v/#", "g3"})) {
		t.Error("away key announced for a copy no longer disowned")
	}
}

// TestArrivingMemberHidesAwayKey: while a member of a share group moves
// in live here (localInterest.arrive), the group's away key is not
// announced, in deltas or snapshots, and comes back once no member of the
// group is arriving any more (TestReproGroupSwapOrder).
func TestArrivingMemberHidesAwayKey(t *testing.T) {
	g := ikey{"t/#", "g0"}
	away := awayKey(g)
	other := ikey{"u/#", "g1"}
	l := newLocalInterest()
	l.add(g)
	l.add(away)
	l.add(awayKey(other))
	l.take()
	step := func(what string, f func(), want ...delta) {
		t.Helper()
		f()
		ds, _ := l.take()
		for i := range ds {
			ds[i].seq = 0
		}
		if !slices.Equal(ds, want) {
			t.Errorf("%s: deltas %v, want %v", what, ds, want)
		}
	}
	announced := func() bool {
		keys, _ := l.snapshot()
		return slices.Contains(keys, away)
	}
	step("a member arrives", func() { l.arrive(g, true) }, delta{0, false, away})
	if announced() {
		t.Error("away key in the snapshot while a member arrives")
	}
	step("a second one", func() { l.arrive(g, true) })
	step("another group's member", func() { l.arrive(other, true) }, delta{0, false, awayKey(other)})
	step("another group's done", func() { l.arrive(other, false) }, delta{0, true, awayKey(other)})
	step("one of two done", func() { l.arrive(g, false) })
	step("a second copy disowned", func() { l.add(away) })
	step("the last done", func() { l.arrive(g, false) }, delta{0, true, away})
	if !announced() {
		t.Error("away key not in the snapshot once no member arrives")
	}
	step("copies gone", func() { l.remove(away); l.remove(away) }, delta{0, false, away})
	// A copy disowned while a member arrives: announced only after.
	step("arrives first", func() { l.arrive(g, true) })
	step("disowned meanwhile", func() { l.add(away) })
	step("done", func() { l.arrive(g, false) }, delta{0, true, away})
	step("gone", func() { l.remove(away) }, delta{0, false, away})
	if l.count(g) != 1 {
		t.Errorf("the group's own key counted %d, want 1: arrive is not interest", l.count(g))
	}
}

// A node with a settled persistent member of a share group does not
// announce the group's hold key (a claim's, a fenced copy's) beside it, so
// a restarted node whose only member of the group is a restored copy is
// left out of the group's turns (memberHold; seed 118).
func TestMemberHidesGroupHoldKey(t *testing.T) {
	group := ikey{"t/#", "g0"}
	member := persistShareKey("t/#", "g0")
	hold := member.holdKey()
	plainHold := persistKey("t/#").holdKey()
	l := newLocalInterest()
	step := func(what string, f func(), want ...delta) {
		t.Helper()
		f()
		ds, _ := l.take()
		for i := range ds {
			ds[i].seq = 0
		}
		if !slices.Equal(ds, want) {
			t.Errorf("%s: deltas %v, want %v", what, ds, want)
		}
	}
	step("a claim holds", func() { l.add(hold); l.add(plainHold) }, delta{0, true, hold}, delta{0, true, plainHold})
	step("a member settles here", func() { l.add(group); l.add(member) },
		delta{0, true, group}, delta{0, true, member}, delta{0, false, hold})
	step("a second claim holds", func() { l.add(hold) })
	keys, _ := l.snapshot()
	if slices.Contains(keys, hold) || !slices.Contains(keys, plainHold) {
		t.Errorf("snapshot %v: want the plain hold key, not the group's beside its member", keys)
	}
	// Served: n2 holds only (a restored copy), n3 as l announces.
	r := newRemoteInterest()
	r.applySnapshotFor(t, "n2", []ikey{group, hold}, time.Now())
	r.applySnapshotFor(t, "n3", keys, time.Now())
	for id := range uint64(10) {
		for _, tg := range r.plan("t/1", id, newLocalInterest()) {
			if slices.Contains(tg.groups, group.groupKey()) && tg.node != "n3" {
				t.Fatalf("message %d: g0 given to %s, want n3 (its member beside its claim)", id, tg.node)
			}
		}
	}
	step("the member goes", func() { l.remove(member) }, delta{0, true, hold}, delta{0, false, member})
	step("the claims end", func() { l.remove(hold); l.remove(hold) }, delta{0, false, hold})
}

// A restored session's hold key of a group stays announced beside a
// member of the group here (pinned): the broker here gives the restored
// copy its turns too. Once it left the server its keys are a claim's.
func TestRestoredHoldKeyPinned(t *testing.T) {
	member := persistShareKey("t/#", "g0")
	hold := member.holdKey()
	l := newLocalInterest()
	p := newPersistentFilters(l)
	announced := func() bool {
		keys, _ := l.snapshot()
		return slices.Contains(keys, hold)
	}
	p.restore(&broker.StoredSession{ClientID: "r", Subs: []broker.StoredSub{{Filter: "$share/g0/t/#"}}})
	p.add("m", member)
	if !announced() {
		t.Error("a restored copy's hold key hidden beside a member")
	}
	p.claimKeepHeld("c", []broker.StoredSub{{Filter: "$share/g0/t/#"}})
	if !announced() {
		t.Error("a restored copy's hold key hidden beside a member and a claim")
	}
	p.leaveKeepHeld("r") // claimed elsewhere: out of the server, kept for cover
	if announced() {
		t.Error("hold keys announced beside a member once no restored copy is in the server")
	}
	p.remove("m", member)
	if !announced() {
		t.Error("hold keys not announced once the member went")
	}
}

// TestPlanPassedGroup: a share group with a member here goes to no other
// node, unless the broker passed it (broker.GroupPasser: its members here
// are restored sessions not settled yet), which plans it as a group with
// no member here; another group's member here still keeps its own
// (test/jepsen TestClusterFull short faults, seed 838; passon.go).
func TestPlanPassedGroup(t *testing.T) {
	r := newRemoteInterest()
	g0, g1 := ikey{"t/#", "g0"}, ikey{"t/#", "g1"}
	r.applySnapshotFor(t, "n2", []ikey{g0, g1}, time.Now())
	local := newLocalInterest()
	local.add(g0)
	local.add(g1)
	groupsTo := func(passed []string) map[string][]string {
		targets, _ := r.planHeld("t/1", 7, local, passed)
		out := map[string][]string{}
		for _, tg := range targets {
			out[tg.node] = append(out[tg.node], tg.groups...)
		}
		return out
	}
	if got := groupsTo(nil); len(got["n2"]) != 0 {
		t.Errorf("nothing passed: n2 planned for %q, want none (the members here take them)", got["n2"])
	}
	if got := groupsTo([]string{g0.groupKey()}); !slices.Equal(got["n2"], []string{g0.groupKey()}) {
		t.Errorf("g0 passed: n2 planned for %q, want g0 alone", got["n2"])
	}
}
