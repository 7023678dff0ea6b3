package clustertest

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestAddPartitions: every node's config gets the test's partitions in its
// cluster section, whatever else it sets, unless it sets them itself.
func TestAddPartitions(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"", "cluster: {partitions: 2}"},
		{"limits:\n  max_queued: 100\n", "cluster: {partitions: 2}, limits: {max_queued: 100}"},
		{"cluster:\n  adopt_after: 60s\n", "cluster: {adopt_after: 60s, partitions: 2}"},
		{"cluster:\n", "cluster: {partitions: 2}"},
		{"cluster:\n  partitions: 8\n", "cluster: {partitions: 8}"},
	} {
		b, err := addPartitions([]byte(tt.in), 2)
		if err != nil {
			t.Fatalf("%q: %v", tt.in, err)
		}
		var got map[string]any
		if err := yaml.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		var want map[string]any
		if err := yaml.Unmarshal([]byte("{"+tt.want+"}"), &want); err != nil {
			t.Fatal(err)
		}
		if g, w := yamlString(t, got), yamlString(t, want); g != w {
			t.Errorf("%q: got\n%s\nwant\n%s", tt.in, g, w)
		}
	}
	if _, err := addPartitions([]byte("- a\n"), 2); err == nil {
		t.Error("a list taken as a config")
	}
}

func yamlString(t *testing.T, v any) string {
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestWithConfig: a test's own --config file is replaced by a copy with the
// partitions beside it (its relative paths resolve as before); without one
// the node gets Start's, written from Options.Config.
func TestWithConfig(t *testing.T) {
	dir, own := t.TempDir(), t.TempDir()
	src := filepath.Join(own, "roost.yaml")
	if err := os.WriteFile(src, []byte("auth:\n  password_file: passwd\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	args, err := withConfig([]string{"--config", src, "--http", "x"}, dir, "", 2)
	if err != nil {
		t.Fatal(err)
	}
	if args[0] != "--config" || filepath.Dir(args[1]) != own || args[1] == src || !slices.Equal(args[2:], []string{"--http", "x"}) {
		t.Fatalf("args %q", args)
	}
	if b, _ := os.ReadFile(args[1]); !strings.Contains(string(b), "password_file: passwd") || !strings.Contains(string(b), "partitions: 2") {
		t.Fatalf("%s:\n%s", args[1], b)
	}
	args, err = withConfig([]string{"--http", "x"}, dir, "cluster:\n  adopt_after: 5s\n", 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(args) != 4 || args[2] != "--config" || filepath.Dir(args[3]) != dir {
		t.Fatalf("args %q", args)
	}
	if b, _ := os.ReadFile(args[3]); !strings.Contains(string(b), "adopt_after: 5s") || !strings.Contains(string(b), "partitions: 2") {
		t.Fatalf("%s:\n%s", args[3], b)
	}
	// The flag parser takes the last --config: that is the one to carry the
	// partitions.
	other := filepath.Join(own, "other.yaml")
	if err := os.WriteFile(other, []byte("cluster:\n  partitions: 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	args, err = withConfig([]string{"--config", other, "--config", src}, dir, "", 2)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(args[3]); args[1] != other || !strings.Contains(string(b), "password_file") || !strings.Contains(string(b), "partitions: 2") {
		t.Fatalf("args %q; %s:\n%s", args, args[3], b)
	}
	if _, err := withConfig([]string{"--config", src}, dir, "cluster: {}", 2); err == nil {
		t.Error("both a --config and Options.Config taken")
	}
}
