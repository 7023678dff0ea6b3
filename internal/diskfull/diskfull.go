// Package diskfull gives tests a disk they can fill: a small tmpfs mounted
// for the test, and a way to fill it up to ENOSPC, as another process
// filling the broker's data disk would. Mounting needs root (or
// CAP_SYS_ADMIN); where it is not permitted the test is skipped, not
// failed, since the machine, not the code, lacks something.
//
// It is for tests only: only test files import it.
package diskfull

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// Tmpfs mounts a tmpfs of size (as mount's size= option: "16m") on a new
// directory, which it returns, and unmounts it when t ends. It skips t
// where mounting is not permitted.
func Tmpfs(t testing.TB, size string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (needs root or CAP_SYS_ADMIN): %v: %s", err, out)
	}
	// Registered after TempDir's own cleanup, so it runs first: the
	// directory is unmounted before it is removed.
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// maxFill bounds Fill: 1 GiB, far more than the tmpfs a test mounts.
const maxFill = 1 << 30

// Fill writes the new file path until its file system is full (a write
// fails with ENOSPC). It fails t on any other error, or if maxFill bytes
// fit. Removing path frees the space again.
func Fill(t testing.TB, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for range maxFill / len(buf) {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatal("the disk never filled")
}
