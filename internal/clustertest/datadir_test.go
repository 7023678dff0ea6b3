package clustertest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// DataEnv's directory holds the nodes' data, in a directory of the test's
// own that is gone when the test ends.
func TestDataRootUnderDataEnv(t *testing.T) {
	base := t.TempDir()
	t.Setenv(DataEnv, base)
	var dir string
	t.Run("cluster", func(t *testing.T) {
		var mem bool
		dir, mem = dataRoot(t)
		if mem || filepath.Dir(dir) != base || !strings.Contains(filepath.Base(dir), "TestDataRootUnderDataEnv_cluster") {
			t.Fatalf("dataRoot = %q, %v; want a directory named for the test in %s, not in memory", dir, mem, base)
		}
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			t.Fatalf("%s: %v", dir, err)
		}
	})
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("%s still there after its test ended (%v)", dir, err)
	}
}

// Without DataEnv the data goes to memory only on a tmpfs with room, and
// to the test's TempDir otherwise.
func TestDataRootInMemoryOnlyOnARoomyTmpfs(t *testing.T) {
	t.Setenv(DataEnv, "")
	if isRoomyTmpfs(t.TempDir() + "/missing") {
		t.Fatal("a missing directory taken for a tmpfs")
	}
	dir, mem := dataRoot(t)
	if mem != isRoomyTmpfs(memRoot) {
		t.Fatalf("dataRoot in memory %v, but %s roomy tmpfs %v", mem, memRoot, isRoomyTmpfs(memRoot))
	}
	if mem && filepath.Dir(dir) != memRoot {
		t.Fatalf("dataRoot = %q in memory, want it in %s", dir, memRoot)
	}
}
