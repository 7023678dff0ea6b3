package clustertest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The counter reads only what was appended since its last call for a
// string, so its counts must stay those of a whole-file count through
// appends, a line written in two parts, a line longer than its read
// buffer, and a string first asked about late.
func TestLogCounterCountsWholeLinesAsTheLogGrows(t *testing.T) {
	path := filepath.Join(t.TempDir(), "n1.log")
	lc := newLogCounter(path)
	if n := lc.count("ready"); n != 0 {
		t.Fatalf("no log yet: %d lines, want 0", n)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	long := "msg=adopted " + strings.Repeat("x", 600<<10) + " ready\n" // past the 256 KiB buffer
	steps := []struct {
		write string
		want  map[string]int
	}{
		{"msg=ready ready\nmsg=other\n", map[string]int{"ready": 1, "other": 1}},
		{"msg=rea", map[string]int{"ready": 1, "adopted": 0}}, // half a line: not yet
		{"dy\n", map[string]int{"ready": 2, "adopted": 0}},
		{long, map[string]int{"ready": 3, "adopted": 1, "x": 1}},
		{"msg=adopted\nmsg=adopted\n", map[string]int{"ready": 3, "adopted": 3, "msg=": 6, "": 6, "a\nm": 0}},
	}
	for i, st := range steps {
		if _, err := f.WriteString(st.write); err != nil {
			t.Fatal(err)
		}
		for s, want := range st.want {
			if n := lc.count(s); n != want {
				t.Fatalf("step %d: %d lines with %q, want %d", i, n, s, want)
			}
			if n := lc.count(s); n != want { // nothing new: the same
				t.Fatalf("step %d, asked again: %d lines with %q, want %d", i, n, s, want)
			}
		}
	}
	if off, size := lc.seen["ready"].off, fileSize(t, path); off != size {
		t.Fatalf("read up to %d of %d bytes", off, size)
	}
	// The counter keeps the log open between counts; closed (the
	// cluster stopped), a later count opens it again and goes on from
	// where each string was.
	lc.close()
	if _, err := f.WriteString("msg=ready again\n"); err != nil {
		t.Fatal(err)
	}
	if n := lc.count("ready"); n != 4 {
		t.Fatalf("after close: %d lines with %q, want 4", n, "ready")
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// BenchmarkLogCounterPoll is one poll of a wait that finds nothing new in
// a node's log (what WaitLog does every eventually.Poll while it waits).
func BenchmarkLogCounterPoll(b *testing.B) {
	path := filepath.Join(b.TempDir(), "n1.log")
	if err := os.WriteFile(path, []byte(strings.Repeat("msg=other line\n", 1000)), 0o644); err != nil {
		b.Fatal(err)
	}
	lc := newLogCounter(path)
	lc.count("ready")
	for b.Loop() {
		lc.count("ready")
	}
}
