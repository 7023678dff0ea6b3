package clustertest

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// DataEnv names a directory under which Start puts its nodes' data
// directories instead of choosing one: a disk, to run the nodes with the
// real cost of their syncs.
const DataEnv = "ROOST_CLUSTERTEST_DATA"

// memRoot is where Start puts its nodes' data when DataEnv is not set,
// if it is a tmpfs with memMinFree free.
const memRoot = "/dev/shm"

// memMinFree is the free space a tmpfs needs for the harness to use it:
// a test cluster's data is a few megabytes a node, a thousand sessions'
// some tens; a container's default /dev/shm (64 MiB) is too small.
const memMinFree = 2 << 30

// memBallast is the store ballast (`roost serve --ballast`) of a node
// whose data is in memory: the default 64 MiB is allocated, page by
// page, on a tmpfs (on a disk, fallocate only reserves blocks).
const memBallast = "1MiB"

// tmpfsMagic is the f_type statfs(2) reports for a tmpfs.
const tmpfsMagic = 0x01021994

// dataRoot returns the directory under which a cluster of t keeps its
// nodes' data, and whether that is the harness's memory file system.
//
// A node syncs every JetStream write (cluster sync_always, the default),
// and the nodes' start alone writes and syncs each replicated object:
// on the suite's 2-core VM a 3-node cluster took a third more CPU to
// start on its disk than on a tmpfs (docs/testing.md). A test kills and
// pauses processes, never the machine, so what a sync makes durable is
// the same to it either way: the page cache outlives a kill -9.
func dataRoot(t testing.TB) (dir string, mem bool) {
	t.Helper()
	root, mem := os.Getenv(DataEnv), false
	if root == "" {
		if !isRoomyTmpfs(memRoot) {
			return t.TempDir(), false
		}
		root, mem = memRoot, true
	}
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	dir, err := os.MkdirTemp(root, "roost-"+name[:min(len(name), 64)]+"-")
	if err != nil {
		t.Fatalf("clustertest: data directory: %v", err)
	}
	// Registered before the cluster's stop, so it runs after it (the
	// cleanups run last first).
	t.Cleanup(func() {
		if t.Failed() && os.Getenv(KeepDataEnv) != "" {
			t.Logf("clustertest: the nodes' data directories kept in %s (%s)", dir, KeepDataEnv)
			return
		}
		os.RemoveAll(dir)
	})
	return dir, mem
}

// KeepDataEnv, set to anything, keeps the nodes' data directories of a
// test that failed (a loss seen once in many runs is traced with the
// stream dump tool, cluster's TestStreamDump); the caller removes them.
const KeepDataEnv = "ROOST_CLUSTERTEST_KEEPDATA"

// isRoomyTmpfs reports whether dir is a writable tmpfs with memMinFree
// bytes free.
func isRoomyTmpfs(dir string) bool {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil || st.Type != tmpfsMagic {
		return false
	}
	if int64(st.Bavail)*st.Bsize < memMinFree {
		return false
	}
	return syscall.Access(filepath.Clean(dir), 2) == nil // W_OK
}
