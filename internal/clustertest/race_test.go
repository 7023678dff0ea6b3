package clustertest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A race-built node's report must fail its test (Cluster.stop): found in
// a log of many lines, cut to its block, and nothing for a clean log.
func TestRaceReportFoundInNodeLog(t *testing.T) {
	dir := t.TempDir()
	clean := filepath.Join(dir, "clean.log")
	raced := filepath.Join(dir, "raced.log")
	var b strings.Builder
	for range 200 {
		b.WriteString("time=... level=DEBUG msg=received\n")
	}
	if err := os.WriteFile(clean, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	b.WriteString("==================\nWARNING: DATA RACE\nWrite at 0x00c000123456 by goroutine 7:\n  main.f()\n")
	for range 200 {
		b.WriteString("      /src/x.go:1 +0x1\n")
	}
	if err := os.WriteFile(raced, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := raceReport(clean); r != "" {
		t.Fatalf("a clean log reported %q", r)
	}
	r := raceReport(raced)
	if !strings.HasPrefix(r, "WARNING: DATA RACE\nWrite at") {
		t.Fatalf("report %q: want the race block", r[:min(len(r), 80)])
	}
	if n := strings.Count(r, "\n"); n != 79 {
		t.Fatalf("report of %d lines, want 80", n+1)
	}
	if r := raceReport(filepath.Join(dir, "none.log")); r != "" {
		t.Fatalf("a missing log reported %q", r)
	}
}
