package clustertest

import (
	"os"
	"testing"

	"github.com/roost-mqtt/roost/internal/roostbin"
)

// BinEnv is the environment variable that hands a test process an
// already built roost binary (plain or race, whichever it asks for): a
// test re-executed inside a network namespace gets its parent's binary
// this way, whatever the flavour.
const BinEnv = "ROOST_CLUSTERTEST_BIN"

// Build returns the path of a roost binary for this test process: BinEnv's
// value when that is set, else roostbin.Path's (the suite's prebuilt
// binary, or one built on first use, with -race if race). The error
// carries the go build output.
func Build(race bool) (string, error) {
	if bin := os.Getenv(BinEnv); bin != "" {
		return bin, nil
	}
	return roostbin.Path(race)
}

// Binary is Build for a test: it fails t if the binary cannot be built.
func Binary(t testing.TB, race bool) string {
	t.Helper()
	bin, err := Build(race)
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// Main runs m's tests, removes the binaries Build made for them and exits
// with the tests' code. Call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	roostbin.Cleanup()
	os.Exit(code)
}
