package clustertest

import (
	"testing"

	"github.com/roost-mqtt/roost/internal/roostbin"
)

// A process handed a binary (a test re-executed in a namespace) uses it
// for either flavour, ahead of the suite's prebuilt ones.
func TestBuildUsesTheHandedBinary(t *testing.T) {
	t.Setenv(BinEnv, "/nonexistent/roost")
	t.Setenv(roostbin.Env, "/nonexistent/plain")
	t.Setenv(roostbin.RaceEnv, "/nonexistent/race")
	for _, race := range []bool{false, true} {
		bin, err := Build(race)
		if err != nil || bin != "/nonexistent/roost" {
			t.Fatalf("Build(%v) = %q, %v; want the binary %s names", race, bin, err, BinEnv)
		}
	}
}
