package roostbin

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// A handed binary is used as it is, for the flavour its variable names.
func TestPathUsesTheHandedBinaries(t *testing.T) {
	dir := t.TempDir()
	plain, race := filepath.Join(dir, "plain"), filepath.Join(dir, "race")
	for _, f := range []string{plain, race} {
		if err := os.WriteFile(f, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv(Env, plain)
	t.Setenv(RaceEnv, race)
	for flavour, want := range map[bool]string{false: plain, true: race} {
		if got, err := Path(flavour); err != nil || got != want {
			t.Errorf("Path(%v) = %q, %v; want %q", flavour, got, err, want)
		}
	}
}

// A variable that names no executable fails Path, naming the variable,
// instead of failing later in whichever test runs it.
func TestPathRejectsABadHandedBinary(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "roost")
	if err := os.WriteFile(notExec, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{filepath.Join(dir, "missing"), notExec, dir} {
		t.Setenv(RaceEnv, bad)
		bin, err := Path(true)
		if err == nil || !strings.Contains(err.Error(), RaceEnv) {
			t.Errorf("Path(true) with %s=%s = %q, %v; want an error naming %s", RaceEnv, bad, bin, err, RaceEnv)
		}
	}
}

// Without a handed binary, Path builds one that runs, once per process,
// and Cleanup removes it. The plain flavour: in the suite its packages are
// already compiled (scripts/test.sh built the same binary), so this costs
// a link.
func TestPathBuildsOnceWithoutAHandedBinary(t *testing.T) {
	t.Setenv(Env, "")
	bin, err := Path(false)
	if err != nil {
		t.Fatal(err)
	}
	defer Cleanup()
	if out, err := exec.Command(bin, "version").CombinedOutput(); err != nil {
		t.Fatalf("%s version: %v\n%s", bin, err, out)
	}
	again, err := Path(false)
	if err != nil || again != bin {
		t.Fatalf("second Path(false) = %q, %v; want the first build %q", again, err, bin)
	}
	Cleanup()
	if _, err := os.Stat(bin); !os.IsNotExist(err) {
		t.Fatalf("after Cleanup, stat %s: %v; want it removed", bin, err)
	}
}
