package clustertest

import (
	"testing"
)

// A process handed a binary (a test re-executed in a namespace) uses it
// for either flavour and builds nothing.
func TestBuildUsesTheHandedBinary(t *testing.T) {
	t.Setenv(BinEnv, "/nonexistent/roost")
	for _, race := range []bool{false, true} {
		bin, err := Build(race)
		if err != nil || bin != "/nonexistent/roost" {
			t.Fatalf("Build(%v) = %q, %v; want the binary %s names", race, bin, err, BinEnv)
		}
	}
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if builds.dir != "" {
		t.Fatalf("Build made %s although %s was set", builds.dir, BinEnv)
	}
}
