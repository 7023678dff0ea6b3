package topic

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
)

func matchRetained(r *Retained[int], filter string) []string {
	var got []string
	r.MatchFilter(filter, func(name string, _ int) { got = append(got, name) })
	slices.Sort(got)
	return got
}

func TestRetainedMatchTable(t *testing.T) {
	for _, tt := range matchTests {
		var r Retained[int]
		r.Set(tt.name, 1)
		got := matchRetained(&r, tt.filter)
		if (len(got) == 1) != tt.want || len(got) > 1 {
			t.Errorf("filter %q, name %q: got %v, want match=%v", tt.filter, tt.name, got, tt.want)
		}
	}
}

func TestRetainedSetGetDelete(t *testing.T) {
	var r Retained[int]
	if _, ok := r.Get("a"); ok {
		t.Fatal("Get on empty store found a value")
	}
	r.Set("a/b", 1)
	r.Set("a/b", 2) // replace
	r.Set("a", 3)   // a prefix of another name
	r.Set("a//b", 4)
	r.Set("/", 5)
	if r.Len() != 4 {
		t.Fatalf("Len = %d, want 4", r.Len())
	}
	for name, want := range map[string]int{"a/b": 2, "a": 3, "a//b": 4, "/": 5} {
		if v, ok := r.Get(name); !ok || v != want {
			t.Errorf("Get(%q) = %d, %v; want %d, true", name, v, ok, want)
		}
	}
	for _, name := range []string{"a/b/c", "b", "", "a/"} {
		if _, ok := r.Get(name); ok {
			t.Errorf("Get(%q) found a value", name)
		}
	}
	if r.Delete("a/b/c") || r.Delete("a/") {
		t.Error("Delete of a missing name reported true")
	}
	if !r.Delete("a") || r.Delete("a") {
		t.Error("Delete(a) twice: want true then false")
	}
	if v, ok := r.Get("a/b"); !ok || v != 2 {
		t.Errorf("after Delete(a), Get(a/b) = %d, %v", v, ok)
	}
	for _, name := range []string{"a/b", "a//b", "/"} {
		if !r.Delete(name) {
			t.Errorf("Delete(%q) = false", name)
		}
	}
	if r.Len() != 0 || !r.root.kids.empty() {
		t.Errorf("store not pruned after deleting all: Len %d, root %+v", r.Len(), r.root)
	}
}

// TestRetainedRandom checks MatchFilter against the reference Match over a
// random set of names kept in a model map.
func TestRetainedRandom(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	model := map[string]int{}
	var r Retained[int]
	nonEmpty := 0
	for i := 0; i < 20000; i++ {
		name := randTopic(rnd, false)
		if rnd.IntN(3) == 0 {
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
		if i%10 != 0 {
			continue
		}
		filter := randTopic(rnd, true)
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
		if len(want) > 0 {
			nonEmpty++
		}
	}
	if nonEmpty < 1000 {
		t.Errorf("only %d of 2000 checks had matches: the generator is too sparse", nonEmpty)
	}
	for n, want := range model {
		if v, ok := r.Get(n); !ok || v != want {
			t.Fatalf("Get(%q) = %d, %v; want %d", n, v, ok, want)
		}
		r.Delete(n)
	}
	if r.Len() != 0 || !r.root.kids.empty() {
		t.Fatal("store not pruned after deleting all")
	}
}

func TestRetainedConcurrent(t *testing.T) {
	var r Retained[int]
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(w), 1))
			for i := 0; i < 2000; i++ {
				name := randTopic(rnd, false)
				r.Set(name, i)
				r.MatchFilter(randTopic(rnd, true), func(string, int) {})
				r.Get(randTopic(rnd, false))
				if rnd.IntN(2) == 0 {
					r.Delete(name)
				}
				_ = r.Len()
			}
		})
	}
	wg.Wait()
}

// MatchFilterSorted yields what MatchFilter does, in byte order of the
// names ('-' before '/', a name before the names below it), and stops when
// told to.
func TestRetainedMatchFilterSorted(t *testing.T) {
	names := []string{"a", "a/b", "a-b", "a-b/c", "a/b/c", "a/", "ab", "/x", "$SYS/x", "b/a", "b/b/b"}
	rnd := rand.New(rand.NewPCG(5, 6))
	for i := range 200 {
		names = append(names, randTopic(rnd, false), fmt.Sprintf("big/%d", i))
	}
	var r Retained[int]
	for i, n := range names {
		r.Set(n, i)
	}
	filters := []string{"#", "a/#", "+", "+/#", "+/+", "a/+", "$SYS/#", "big/+", "+/b/#", "/#"}
	for range 300 {
		filters = append(filters, randTopic(rnd, true))
	}
	for _, f := range filters {
		want := matchRetained(&r, f) // sorted
		var got []string
		r.MatchFilterSorted(f, func(name string, _ int) bool { got = append(got, name); return true })
		if !slices.Equal(got, want) {
			t.Fatalf("MatchFilterSorted(%q) =\n%q\nwant\n%q", f, got, want)
		}
		for _, limit := range []int{1, 3} {
			var first []string
			r.MatchFilterSorted(f, func(name string, _ int) bool {
				first = append(first, name)
				return len(first) < limit
			})
			if n := min(limit, len(want)); !slices.Equal(first, want[:n]) {
				t.Fatalf("MatchFilterSorted(%q) stopped after %d: got %q, want %q", f, limit, first, want[:n])
			}
		}
	}
}
