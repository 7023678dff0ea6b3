package topic

import "testing"

// FuzzMatch checks, for every valid filter and name, that the Tree and
// Retained indexes agree with the reference Match, and that validation never
// panics. Run with: go test -fuzz FuzzMatch ./topic
func FuzzMatch(f *testing.F) {
	for _, tt := range matchTests {
		f.Add(tt.filter, tt.name)
	}
	f.Add("$share/g/a/#", "a/b")
	f.Fuzz(func(t *testing.T, filter, name string) {
		errF := ValidFilter(filter, 0)
		errN := ValidName(name, 0)
		_, _, _, _ = ParseShare(filter)
		if errF != nil || errN != nil {
			return
		}
		if _, rest, shared, _ := ParseShare(filter); shared {
			filter = rest
		}
		want := Match(filter, name)

		tr := NewTree[int, int]()
		tr.Subscribe(filter, "", 1, 1)
		got := 0
		tr.Match(name, func(string, string, int, int) { got++ })
		if (got == 1) != want || got > 1 {
			t.Errorf("Tree: filter %q name %q: %d matches, Match says %v", filter, name, got, want)
		}

		var r Retained[int]
		r.Set(name, 1)
		got = 0
		r.MatchFilter(filter, func(string, int) { got++ })
		if (got == 1) != want || got > 1 {
			t.Errorf("Retained: filter %q name %q: %d matches, Match says %v", filter, name, got, want)
		}
	})
}
