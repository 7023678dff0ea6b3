package topic

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
)

// hit is one Tree.Match callback, comparable for set checks.
type hit struct {
	filter, group string
	key           int
	v             string
}

func collect(tr *Tree[int, string], name string) []hit {
	var got []hit
	tr.Match(name, func(filter, group string, key int, v string) {
		got = append(got, hit{filter, group, key, v})
	})
	slices.SortFunc(got, compareHits)
	return got
}

func compareHits(a, b hit) int {
	return cmp.Or(strings.Compare(a.filter, b.filter), strings.Compare(a.group, b.group),
		cmp.Compare(a.key, b.key), strings.Compare(a.v, b.v))
}

func TestTreeMatchTable(t *testing.T) {
	for _, tt := range matchTests {
		tr := NewTree[int, string]()
		tr.Subscribe(tt.filter, "", 1, "v")
		got := collect(tr, tt.name)
		if want := tt.want; (len(got) == 1) != want || len(got) > 1 {
			t.Errorf("filter %q, name %q: got %v, want match=%v", tt.filter, tt.name, got, want)
		}
	}
}

func TestTreeSubscribeReplaceUnsubscribe(t *testing.T) {
	tr := NewTree[int, string]()
	steps := []struct {
		op            string // "sub" or "unsub"
		filter, group string
		key           int
		v             string
		want          bool // replaced or existed
		wantLen       int
	}{
		{"sub", "a/+", "", 1, "x", false, 1},
		{"sub", "a/+", "", 1, "y", true, 1},   // same key, filter, group: replaced
		{"sub", "a/+", "", 2, "z", false, 2},  // other key
		{"sub", "a/+", "g", 1, "s", false, 3}, // same key in a share group is separate
		{"sub", "a/+", "h", 1, "t", false, 4},
		{"sub", "a/#", "", 1, "u", false, 5},
		{"unsub", "a/+", "", 3, "", false, 5}, // never subscribed
		{"unsub", "a/b", "", 1, "", false, 5}, // no such filter
		{"unsub", "a", "", 1, "", false, 5},   // a prefix node, no subscription
		{"unsub", "a/+", "g", 1, "", true, 4},
		{"unsub", "a/+", "g", 1, "", false, 4}, // twice
	}
	for i, s := range steps {
		var got bool
		if s.op == "sub" {
			got = tr.Subscribe(s.filter, s.group, s.key, s.v)
		} else {
			got = tr.Unsubscribe(s.filter, s.group, s.key)
		}
		if got != s.want || tr.Len() != s.wantLen {
			t.Fatalf("step %d %s(%q, %q, %d) = %v, Len %d; want %v, Len %d",
				i, s.op, s.filter, s.group, s.key, got, tr.Len(), s.want, s.wantLen)
		}
	}
	want := []hit{{"a/#", "", 1, "u"}, {"a/+", "", 1, "y"}, {"a/+", "", 2, "z"}, {"a/+", "h", 1, "t"}}
	slices.SortFunc(want, compareHits)
	if got := collect(tr, "a/b"); !slices.Equal(got, want) {
		t.Errorf("Match(a/b) = %v, want %v", got, want)
	}
}

func TestTreePrune(t *testing.T) {
	tr := NewTree[int, int]()
	filters := []string{"a", "a/b/c", "a/+/c", "a/#", "#", "+", "/", "a//b", "$SYS/#", "x/y/z/w"}
	for round := 0; round < 3; round++ {
		for i, f := range filters {
			for k := 0; k < 100; k++ { // enough to build a node index and shrink subs
				tr.Subscribe(f, "", k, i)
				tr.Subscribe(f, "g", k, i)
			}
		}
		if got, want := tr.Len(), len(filters)*200; got != want {
			t.Fatalf("Len = %d, want %d", got, want)
		}
		for _, f := range filters {
			for k := 0; k < 100; k++ {
				if !tr.Unsubscribe(f, "", k) || !tr.Unsubscribe(f, "g", k) {
					t.Fatalf("Unsubscribe(%q, %d) = false", f, k)
				}
			}
		}
		if tr.Len() != 0 || !tr.root.empty() {
			t.Fatalf("round %d: tree not empty after unsubscribing all: Len %d, root %+v", round, tr.Len(), tr.root)
		}
	}
}

func TestTreeMatchDoesNotAllocate(t *testing.T) {
	tr := NewTree[int, int]()
	tr.Subscribe("a/+/c", "", 1, 1)
	tr.Subscribe("a/#", "g", 2, 2)
	tr.Subscribe("#", "", 3, 3)
	n := 0
	fn := func(string, string, int, int) { n++ }
	for _, name := range []string{"a/b/c", "x/y", "$SYS/x"} {
		if allocs := testing.AllocsPerRun(100, func() { tr.Match(name, fn) }); allocs != 0 {
			t.Errorf("Match(%q): %v allocs, want 0", name, allocs)
		}
	}
}

// randTopic returns a random name, or a random valid filter if filter is
// true, built from a small alphabet so that names and filters collide often.
func randTopic(r *rand.Rand, filter bool) string {
	literals := []string{"a", "b", "", "$x", "ab"}
	n := 1 + r.IntN(4)
	levels := make([]string, n)
	for i := range levels {
		levels[i] = literals[r.IntN(len(literals))]
		if filter && r.IntN(4) == 0 {
			levels[i] = "+"
		}
	}
	if filter && r.IntN(4) == 0 {
		levels[n-1] = "#"
	}
	if t := strings.Join(levels, "/"); t != "" {
		return t
	}
	return "/" // names and filters are never empty [MQTT-4.7.3-1]
}

// TestTreeRandom runs random subscribes and unsubscribes against a model and
// checks Tree.Match against the reference Match for random names.
func TestTreeRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	type sub struct {
		filter, group string
		key           int
	}
	model := map[sub]string{}
	tr := NewTree[int, string]()
	groups := []string{"", "", "g1", "g2"}
	nonEmpty := 0
	for i := 0; i < 20000; i++ {
		s := sub{randTopic(r, true), groups[r.IntN(len(groups))], r.IntN(5)}
		if err := ValidFilter(s.filter, 0); err != nil {
			t.Fatalf("generator made invalid filter %q: %v", s.filter, err)
		}
		if r.IntN(3) == 0 {
			_, ok := model[s]
			delete(model, s)
			if got := tr.Unsubscribe(s.filter, s.group, s.key); got != ok {
				t.Fatalf("Unsubscribe(%v) = %v, want %v", s, got, ok)
			}
		} else {
			_, ok := model[s]
			v := fmt.Sprint(i)
			model[s] = v
			if got := tr.Subscribe(s.filter, s.group, s.key, v); got != ok {
				t.Fatalf("Subscribe(%v) = %v, want %v", s, got, ok)
			}
		}
		if tr.Len() != len(model) {
			t.Fatalf("Len = %d, want %d", tr.Len(), len(model))
		}
		if i%10 != 0 {
			continue
		}
		name := randTopic(r, false)
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
		if len(want) > 0 {
			nonEmpty++
		}
	}
	if nonEmpty < 1000 {
		t.Errorf("only %d of 2000 checks had matches: the generator is too sparse", nonEmpty)
	}
	for s := range model {
		tr.Unsubscribe(s.filter, s.group, s.key)
	}
	if tr.Len() != 0 || !tr.root.empty() {
		t.Fatalf("tree not empty after unsubscribing all")
	}
}

// TestTreeConcurrent is for -race: matchers run while others subscribe and
// unsubscribe.
func TestTreeConcurrent(t *testing.T) {
	tr := NewTree[int, int]()
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 0))
			for i := 0; i < 2000; i++ {
				f := randTopic(r, true)
				tr.Subscribe(f, "", w, i)
				tr.Match(randTopic(r, false), func(string, string, int, int) {})
				if r.IntN(2) == 0 {
					tr.Unsubscribe(f, "", w)
				}
				_ = tr.Len()
			}
		})
	}
	wg.Wait()
}
