package hostile

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var updateSeeds = flag.Bool("hostile.update-seeds", false, "rewrite broker/testdata/fuzz/FuzzConnection/hostile-* from the corpus")

// seedDir is the connection fuzzer's corpus directory.
var seedDir = filepath.Join("..", "..", "broker", "testdata", "fuzz", "FuzzConnection")

// TestHostile plays every corpus case against a broker. Cases without
// options share one broker; each runs on its own connection.
func TestHostile(t *testing.T) {
	shared, logs := startBroker(t, nil)
	seen := map[string]bool{}
	for _, tc := range corpus() {
		name := seedName(tc)
		if seen[name] {
			t.Fatalf("duplicate case %s", name)
		}
		seen[name] = true
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if tc.deviation != "" {
				t.Skipf("known deviation from [%s]: %s", tc.rule, tc.deviation)
			}
			addr, l := shared, logs
			if tc.opts != nil {
				addr, l = startBroker(t, tc.opts)
			}
			run(t, addr, tc)
			if t.Failed() {
				t.Logf("rule: [%s]\nbroker log:\n%s", tc.rule, tail(l.String(), 4000))
			}
		})
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// TestFuzzSeeds checks that every corpus case is a seed of the broker's
// FuzzConnection and no stale hostile seed is left; with
// -hostile.update-seeds it rewrites them.
func TestFuzzSeeds(t *testing.T) {
	want := map[string]string{}
	for _, tc := range corpus() {
		want[seedName(tc)] = seedFile(tc)
	}
	if *updateSeeds {
		if err := os.MkdirAll(seedDir, 0o755); err != nil {
			t.Fatal(err)
		}
		old, _ := filepath.Glob(filepath.Join(seedDir, "hostile-*"))
		for _, f := range old {
			os.Remove(f)
		}
		for name, content := range want {
			if err := os.WriteFile(filepath.Join(seedDir, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	files, _ := filepath.Glob(filepath.Join(seedDir, "hostile-*"))
	for _, f := range files {
		name := filepath.Base(f)
		if _, ok := want[name]; !ok {
			t.Errorf("stale seed %s: rerun with -hostile.update-seeds", name)
		}
	}
	for name, content := range want {
		got, err := os.ReadFile(filepath.Join(seedDir, name))
		if err != nil || string(got) != content {
			t.Errorf("seed %s missing or out of date: rerun with -hostile.update-seeds", name)
		}
		if !strings.HasPrefix(content, "go test fuzz v1\n") {
			t.Errorf("seed %s: bad header", name)
		}
	}
}
