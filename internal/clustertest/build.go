package clustertest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// BinEnv is the environment variable that hands a test process an
// already built roost binary (plain or race, whichever it asks for).
const BinEnv = "ROOST_CLUSTERTEST_BIN"

// builds holds the binaries this test process built: one per flavour,
// built on first use, removed by Main. Package-level because "once per
// test process" is the point: every test of a package shares them.
var builds struct {
	mu   sync.Mutex
	dir  string
	bins map[bool]string // by race
}

// Build returns the path of a roost binary for this test process,
// building it on the first call (with -race if race) from the module
// containing the working directory. It returns BinEnv's value when that
// is set. The error carries the go build output.
func Build(race bool) (string, error) {
	if bin := os.Getenv(BinEnv); bin != "" {
		return bin, nil
	}
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if bin, ok := builds.bins[race]; ok {
		return bin, nil
	}
	if builds.dir == "" {
		dir, err := os.MkdirTemp("", "roost-clustertest")
		if err != nil {
			return "", err
		}
		builds.dir, builds.bins = dir, map[bool]string{}
	}
	name := "roost"
	args := []string{"build", "-o"}
	if race {
		name = "roost-race"
		args = append(args, filepath.Join(builds.dir, name), "-race")
	} else {
		args = append(args, filepath.Join(builds.dir, name))
	}
	args = append(args, "github.com/roost-mqtt/roost/cmd/roost")
	out, err := exec.Command("go", args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("building roost (race %v): %w\n%s", race, err, out)
	}
	bin := filepath.Join(builds.dir, name)
	builds.bins[race] = bin
	return bin, nil
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
	builds.mu.Lock()
	if builds.dir != "" {
		os.RemoveAll(builds.dir)
	}
	builds.mu.Unlock()
	os.Exit(code)
}
