package roostbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
)

// The environment variables through which a suite runner hands prebuilt
// binaries to the test processes.
const (
	Env     = "ROOST_TEST_BIN"      // built without -race
	RaceEnv = "ROOST_TEST_BIN_RACE" // built with -race
)

// builds holds the binaries this test process built: one per flavour,
// built on first use, removed by Cleanup. Package-level because "once per
// test process" is the point: every test of a package shares them.
var builds struct {
	mu   sync.Mutex
	dir  string
	bins map[bool]string // by race
}

// Path returns the path of a roost binary, built with -race if race. It
// returns Env's or RaceEnv's value when that is set, after checking that
// it names an executable file (a wrong path fails here, saying which
// variable, rather than as a puzzling exec error in some test). Otherwise
// it builds the binary on the first call for each flavour, from the module
// containing the working directory; the error carries the go build output.
func Path(race bool) (string, error) {
	env := Env
	if race {
		env = RaceEnv
	}
	if bin := os.Getenv(env); bin != "" {
		if err := executable(bin); err != nil {
			return "", fmt.Errorf("%s: %w", env, err)
		}
		return bin, nil
	}
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if bin, ok := builds.bins[race]; ok {
		return bin, nil
	}
	if builds.dir == "" {
		dir, err := os.MkdirTemp("", "roost-testbin-")
		if err != nil {
			return "", err
		}
		builds.dir, builds.bins = dir, map[bool]string{}
	}
	bin := filepath.Join(builds.dir, "roost")
	args := []string{"build", "-o", bin}
	if race {
		bin = filepath.Join(builds.dir, "roost-race")
		args = []string{"build", "-o", bin, "-race"}
	}
	args = append(args, "github.com/roost-mqtt/roost/cmd/roost")
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("building roost (race %v): %w\n%s", race, err, out)
	}
	builds.bins[race] = bin
	return bin, nil
}

// executable reports why bin is not an executable regular file.
func executable(bin string) error {
	fi, err := os.Stat(bin)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file (mode %v)", bin, fi.Mode())
	}
	return nil
}

// Cleanup removes the binaries Path built in this process (never the ones
// handed in through the environment). Call it when the tests have ended,
// from TestMain.
func Cleanup() {
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if builds.dir != "" {
		os.RemoveAll(builds.dir)
		builds.dir, builds.bins = "", nil
	}
}
