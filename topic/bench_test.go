package topic

import (
	"fmt"
	"sync"
	"testing"
)

// benchNames are 10,000 topic names "building/{0-9}/floor/{0-9}/sensor/{0-99}".
func benchNames() []string {
	names := make([]string, 0, 10000)
	for b := range 10 {
		for f := range 10 {
			for s := range 100 {
				names = append(names, fmt.Sprintf("building/%d/floor/%d/sensor/%d", b, f, s))
			}
		}
	}
	return names
}

// benchTree subscribes one session to each of the 10,000 literal names.
func benchTree() *Tree[int, byte] {
	tr := NewTree[int, byte]()
	for i, n := range benchNames() {
		tr.Subscribe(n, "", i, 1)
	}
	return tr
}

func benchMatch(b *testing.B, tr *Tree[int, byte], name string, want int) {
	n := 0
	fn := func(string, string, int, byte) { n++ }
	b.ReportAllocs()
	for b.Loop() {
		tr.Match(name, fn)
	}
	if n != want*b.N {
		b.Fatalf("Match(%q): %d matches in %d runs, want %d per run", name, n, b.N, want)
	}
}

// BenchmarkTreeMatch: a literal name against 10,000 literal subscriptions.
func BenchmarkTreeMatch(b *testing.B) {
	tr := benchTree()
	b.Run("hit", func(b *testing.B) { benchMatch(b, tr, "building/3/floor/7/sensor/42", 1) })
	b.Run("miss", func(b *testing.B) { benchMatch(b, tr, "building/3/floor/7/sensor/x", 0) })
	b.Run("shortmiss", func(b *testing.B) { benchMatch(b, tr, "elsewhere/x", 0) })
}

// BenchmarkTreeMatchWildcard: the same 10,000 subscriptions plus 111
// wildcard ones, 4 of which match along with the literal one, and a shared
// group of 10 sessions.
func BenchmarkTreeMatchWildcard(b *testing.B) {
	tr := benchTree()
	for f := range 10 {
		tr.Subscribe(fmt.Sprintf("building/+/floor/%d/sensor/#", f), "", -1, 1)
	}
	for bd := range 10 {
		tr.Subscribe(fmt.Sprintf("building/%d/#", bd), "", -2, 1)
	}
	for s := range 90 {
		tr.Subscribe(fmt.Sprintf("building/+/floor/+/sensor/%d", s), "", -3, 1)
	}
	tr.Subscribe("#", "", -4, 1)
	for k := range 10 {
		tr.Subscribe("building/+/floor/+/sensor/+", "workers", -10-k, 1)
	}
	benchMatch(b, tr, "building/3/floor/7/sensor/42", 1+4+10)
}

// BenchmarkTreeMatchParallel: BenchmarkTreeMatch/hit from every core, to see
// what the shared read lock costs.
func BenchmarkTreeMatchParallel(b *testing.B) {
	tr := benchTree()
	fn := func(string, string, int, byte) {}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			tr.Match("building/3/floor/7/sensor/42", fn)
		}
	})
}

// BenchmarkCacheBound is the floor for a match cache keyed by topic name (as
// in nats-server's sublist): an RWMutex-guarded map hit on the same name and
// a walk of the cached result. Compare with BenchmarkTreeMatch/hit.
func BenchmarkCacheBound(b *testing.B) {
	var mu sync.RWMutex
	cache := map[string][]int{}
	for i, n := range benchNames() {
		cache[n] = []int{i}
	}
	name := "building/3/floor/7/sensor/42"
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		mu.RLock()
		for range cache[name] {
			n++
		}
		mu.RUnlock()
	}
}

func BenchmarkRetainedMatchFilter(b *testing.B) {
	var r Retained[byte]
	for _, n := range benchNames() {
		r.Set(n, 1)
	}
	for _, bc := range []struct {
		filter string
		want   int
	}{
		{"building/3/floor/7/sensor/42", 1},
		{"building/3/floor/+/sensor/42", 10},
		{"building/+/floor/+/sensor/42", 100},
		{"building/3/floor/7/#", 100},
		{"#", 10000},
	} {
		b.Run(bc.filter, func(b *testing.B) {
			n := 0
			fn := func(string, byte) { n++ }
			b.ReportAllocs()
			for b.Loop() {
				r.MatchFilter(bc.filter, fn)
			}
			if n != bc.want*b.N {
				b.Fatalf("%d matches in %d runs, want %d per run", n, b.N, bc.want)
			}
		})
	}
}

func BenchmarkMatch(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		Match("building/+/floor/7/sensor/#", "building/3/floor/7/sensor/42")
	}
}

func BenchmarkValidFilter(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = ValidFilter("$share/g/building/+/floor/7/sensor/#", 0)
	}
}
