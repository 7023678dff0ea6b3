package topic

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"
)

// kidsModel checks a kids against a plain map after every operation.
func checkKids(t *testing.T, k *kids[int], model map[string]*int) {
	t.Helper()
	if k.len() != len(model) {
		t.Fatalf("len = %d, want %d", k.len(), len(model))
	}
	if k.list != nil && k.big != nil {
		t.Fatal("both list and big are set")
	}
	switch n := len(model); {
	case n == 0 && !k.empty():
		t.Fatalf("no children but list %v, big %v", k.list, k.big)
	case n > listMax && k.big == nil:
		t.Fatalf("%d children in a slice, want a map above %d", n, listMax)
	case n <= listMin && k.big != nil:
		t.Fatalf("%d children in a map, want a slice at or below %d", n, listMin)
	case cap(k.list) > listMax:
		t.Fatalf("slice capacity %d above %d", cap(k.list), listMax)
	}
	for level, c := range model {
		if got := k.get(level); got != c {
			t.Fatalf("get(%q) = %p, want %p", level, got, c)
		}
	}
	got := map[string]*int{}
	for _, e := range k.list {
		got[e.level] = e.n
	}
	maps.Copy(got, k.big)
	if !maps.Equal(got, model) {
		t.Fatalf("children %v, want %v", got, model)
	}
}

// TestKidsTransitions grows a child set through slice -> map and shrinks it
// back, then runs random adds and removes against a map.
func TestKidsTransitions(t *testing.T) {
	var k kids[int]
	model := map[string]*int{}
	add := func(level string) {
		if k.get(level) == nil {
			c := new(int)
			k.add(level, c)
			model[level] = c
		}
	}
	remove := func(level string) {
		k.remove(level)
		delete(model, level)
	}
	for round := range 3 {
		for i := range 40 {
			add(strconv.Itoa(i))
			checkKids(t, &k, model)
		}
		for i := range 40 {
			remove(strconv.Itoa((i * 7) % 40)) // a different order each time
			checkKids(t, &k, model)
		}
		if !k.empty() {
			t.Fatalf("round %d: not empty after removing all", round)
		}
	}
	rnd := rand.New(rand.NewPCG(5, 6))
	for range 100000 {
		// 20 levels, among them "", so the count crosses listMax and
		// listMin both ways, and removes of absent levels happen.
		level := strconv.Itoa(rnd.IntN(20))
		if level == "19" {
			level = ""
		}
		if rnd.IntN(2) == 0 {
			add(level)
		} else {
			remove(level)
		}
		checkKids(t, &k, model)
	}
}

// BenchmarkKids compares finding the last of n short levels (the worst case
// for the unsorted slice) and a missing one, in a slice and in a map; it is
// how listMax was chosen.
func BenchmarkKids(b *testing.B) {
	for _, n := range []int{1, 2, 4, 8, 12, 16} {
		var list []kid[int]
		m := map[string]*int{}
		for i := range n {
			level := strconv.Itoa(100 + i)
			list = append(list, kid[int]{level, new(int)})
			m[level] = list[i].n
		}
		last := strconv.Itoa(100 + n - 1)
		for _, c := range []struct {
			name string
			k    kids[int]
		}{{"slice", kids[int]{list: slices.Clone(list)}}, {"map", kids[int]{big: m}}} {
			for _, level := range []string{last, "999"} {
				b.Run(fmt.Sprintf("%s/n=%d/%s", c.name, n, map[bool]string{true: "hit", false: "miss"}[level == last]), func(b *testing.B) {
					k := c.k
					for b.Loop() {
						if (k.get(level) != nil) != (level == last) {
							b.Fatal("wrong result")
						}
					}
				})
			}
		}
	}
}

// wideTopic returns a name (or filter) whose levels come from 20 literals,
// so that nodes cross listMax and listMin both ways under random
// insertion and removal.
func wideTopic(r *rand.Rand, filter bool) string {
	n := 1 + r.IntN(3)
	levels := make([]string, n)
	for i := range levels {
		switch x := r.IntN(20); {
		case x == 19:
			levels[i] = ""
		case x == 18:
			levels[i] = "$s"
		default:
			levels[i] = strconv.Itoa(x)
		}
		if filter && r.IntN(6) == 0 {
			levels[i] = "+"
		}
	}
	if filter && r.IntN(6) == 0 {
		levels[n-1] = "#"
	}
	return strings.Join(levels, "/")
}

// checkRetainedShape walks the trie: every child set is in the form its
// size calls for, and every node below the root holds a value or children
// (deletes prune).
func checkRetainedShape(t *testing.T, n *rnode[int], root bool) {
	t.Helper()
	switch c := n.kids.len(); {
	case n.kids.list != nil && n.kids.big != nil:
		t.Fatal("both list and big are set")
	case c == 0 && !n.kids.empty():
		t.Fatal("empty child set holds memory")
	case c > listMax && n.kids.big == nil, c <= listMin && n.kids.big != nil:
		t.Fatalf("%d children, big %v", c, n.kids.big != nil)
	case !root && c == 0 && !n.set:
		t.Fatal("empty node not pruned")
	}
	for _, k := range n.kids.list {
		checkRetainedShape(t, k.n, false)
	}
	for _, c := range n.kids.big {
		checkRetainedShape(t, c, false)
	}
}

// TestRetainedWide runs random Set and Delete on names with wide levels
// against a map, checking Get, Len, MatchFilter and the trie's shape, then
// deletes everything.
func TestRetainedWide(t *testing.T) {
	rnd := rand.New(rand.NewPCG(7, 8))
	model := map[string]int{}
	var r Retained[int]
	for i := range 30000 {
		name := wideTopic(rnd, false)
		// Phases of mostly adds then mostly deletes move the child counts
		// through the slice -> map -> slice transitions.
		if rnd.IntN(10) < 3+4*((i/3000)%2) {
			_, ok := model[name]
			delete(model, name)
			if got := r.Delete(name); got != ok {
				t.Fatalf("Delete(%q) = %v, want %v", name, got, ok)
			}
		} else {
			model[name] = i
			r.Set(name, i)
		}
		if r.Len() != len(model) {
			t.Fatalf("Len = %d, want %d", r.Len(), len(model))
		}
		wantV, wantOK := model[name]
		if v, ok := r.Get(name); v != wantV || ok != wantOK {
			t.Fatalf("Get(%q) = %d, %v; want %d, %v", name, v, ok, wantV, wantOK)
		}
		if i%50 != 0 {
			continue
		}
		checkRetainedShape(t, &r.root, true)
		filter := wideTopic(rnd, true)
		var want []string
		for n := range model {
			if Match(filter, n) {
				want = append(want, n)
			}
		}
		slices.Sort(want)
		if got := matchRetained(&r, filter); !slices.Equal(got, want) {
			t.Fatalf("MatchFilter(%q) =\n%q\nwant\n%q", filter, got, want)
		}
	}
	for n := range model {
		if !r.Delete(n) {
			t.Fatalf("Delete(%q) = false", n)
		}
	}
	if r.Len() != 0 || !r.root.kids.empty() {
		t.Fatal("store not pruned after deleting all")
	}
}

// checkTreeShape is checkRetainedShape for a Tree.
func checkTreeShape(t *testing.T, n *node[int, string], root bool) {
	t.Helper()
	switch c := n.kids.len(); {
	case n.kids.list != nil && n.kids.big != nil:
		t.Fatal("both list and big are set")
	case c == 0 && !n.kids.empty():
		t.Fatal("empty child set holds memory")
	case c > listMax && n.kids.big == nil, c <= listMin && n.kids.big != nil:
		t.Fatalf("%d children, big %v", c, n.kids.big != nil)
	case !root && n.empty():
		t.Fatal("empty node not pruned")
	case len(n.subs) == 0 && n.filter != "":
		t.Fatalf("node without subscriptions keeps filter %q", n.filter)
	}
	for _, k := range n.kids.list {
		checkTreeShape(t, k.n, false)
	}
	for _, c := range n.kids.big {
		checkTreeShape(t, c, false)
	}
	for _, c := range []*node[int, string]{n.plus, n.hash} {
		if c != nil {
			checkTreeShape(t, c, false)
		}
	}
}

// TestTreeWide is TestTreeRandom with wide levels, checking the tree's
// shape as child sets move between slice and map.
func TestTreeWide(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	type sub struct {
		filter, group string
		key           int
	}
	model := map[sub]string{}
	tr := NewTree[int, string]()
	groups := []string{"", "", "g"}
	for i := range 30000 {
		s := sub{wideTopic(r, true), groups[r.IntN(len(groups))], r.IntN(3)}
		if r.IntN(10) < 3+4*((i/3000)%2) {
			_, ok := model[s]
			delete(model, s)
			if got := tr.Unsubscribe(s.filter, s.group, s.key); got != ok {
				t.Fatalf("Unsubscribe(%v) = %v, want %v", s, got, ok)
			}
		} else {
			_, ok := model[s]
			model[s] = strconv.Itoa(i)
			if got := tr.Subscribe(s.filter, s.group, s.key, model[s]); got != ok {
				t.Fatalf("Subscribe(%v) = %v, want %v", s, got, ok)
			}
		}
		if tr.Len() != len(model) {
			t.Fatalf("Len = %d, want %d", tr.Len(), len(model))
		}
		if i%50 != 0 {
			continue
		}
		checkTreeShape(t, &tr.root, true)
		name := wideTopic(r, false)
		var want []hit
		for s, v := range model {
			if Match(s.filter, name) {
				want = append(want, hit{s.filter, s.group, s.key, v})
			}
		}
		slices.SortFunc(want, compareHits)
		if got := collect(tr, name); !slices.Equal(got, want) {
			t.Fatalf("Match(%q) =\n%v\nwant\n%v", name, got, want)
		}
	}
	for s := range model {
		if !tr.Unsubscribe(s.filter, s.group, s.key) {
			t.Fatalf("Unsubscribe(%v) = false", s)
		}
	}
	if tr.Len() != 0 || !tr.root.empty() {
		t.Fatal("tree not empty after unsubscribing all")
	}
}

// collected reports whether the memory of s is freed once the caller drops
// its references, within a second of GCs.
func collected(s string) func() bool {
	done := make(chan struct{})
	runtime.AddCleanup(unsafe.StringData(s), func(ch chan struct{}) { close(ch) }, done)
	return func() bool {
		for range 100 {
			runtime.GC()
			select {
			case <-done:
				return true
			case <-time.After(10 * time.Millisecond):
			}
		}
		return false
	}
}

// packetView returns name as a view into a larger string, the way the
// packet decoder hands out a PUBLISH topic sharing memory with its payload.
func packetView(name string) string {
	body := name + strings.Repeat("x", 4096)
	return body[:len(name)]
}

// TestRetainedDoesNotPinReplaced: once a retained name is replaced by an
// equal string from another packet, or deleted, the first packet's memory
// is not held by the trie's levels.
func TestRetainedDoesNotPinReplaced(t *testing.T) {
	var r Retained[int]
	r.Set("site/1/other", 0) // keeps the inner nodes alive after the Delete
	first := packetView("site/1/dev/42/temp")
	r.Set(first, 1)
	freed := collected(first)
	first = ""
	r.Set(packetView("site/1/dev/42/temp"), 2)
	if !freed() {
		t.Error("the replaced name's packet is still referenced")
	}
	name := packetView("site/1/dev/43/temp")
	r.Set(name, 3)
	freed = collected(name)
	r.Delete(name)
	name = ""
	if !freed() {
		t.Error("the deleted name's packet is still referenced")
	}
	runtime.KeepAlive(&r)
}

// TestTreeDoesNotPinFilters: a node's filter and levels do not hold the
// SUBSCRIBE packet of a subscriber that has left.
func TestTreeDoesNotPinFilters(t *testing.T) {
	tr := NewTree[int, string]()
	first := packetView("site/+/dev/42/temp")
	tr.Subscribe(first, "", 1, "a")
	freed := collected(first)
	tr.Subscribe(packetView("site/+/dev/42/temp"), "", 2, "b")
	tr.Unsubscribe(first, "", 1)
	first = ""
	if !freed() {
		t.Error("the first subscriber's packet is still referenced")
	}
	runtime.KeepAlive(tr)
}
