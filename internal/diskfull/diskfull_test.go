package diskfull

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// Fill leaves no room on the tmpfs Tmpfs mounted: the next write fails
// with ENOSPC, and removing the filler makes room again.
func TestFillTmpfs(t *testing.T) {
	dir := Tmpfs(t, "2m")
	filler := filepath.Join(dir, "filler")
	Fill(t, filler)
	err := os.WriteFile(filepath.Join(dir, "more"), make([]byte, 64<<10), 0o600)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("a write after Fill: %v, want ENOSPC", err)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "more"), make([]byte, 64<<10), 0o600); err != nil {
		t.Fatalf("a write after the filler was removed: %v", err)
	}
}
