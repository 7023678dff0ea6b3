package main

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestVersionCommand(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := runCmd(t, "version")
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if !strings.HasPrefix(stdout, "roost ") || !strings.Contains(stdout, runtime.Version()) {
		t.Errorf("stdout = %q, want the version and %s", stdout, runtime.Version())
	}
}

func TestVersionText(t *testing.T) {
	t.Parallel()
	goLine := "built with " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + "\n"
	vcs := []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: "0123abcd"}}
	tests := []struct {
		name    string
		version string
		bi      *debug.BuildInfo
		want    string
	}{
		{"no build info", "dev", nil, "roost dev\n" + goLine},
		{"ldflags", "v1.2.3", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "roost v1.2.3\n" + goLine},
		{"go install", "dev", &debug.BuildInfo{Main: debug.Module{Version: "v0.4.0"}}, "roost v0.4.0\n" + goLine},
		{"ldflags beat module", "v9", &debug.BuildInfo{Main: debug.Module{Version: "v0.4.0"}}, "roost v9\n" + goLine},
		{"revision", "dev", &debug.BuildInfo{Settings: vcs}, "roost dev\ncommit 0123abcd\n" + goLine},
		{"modified", "dev", &debug.BuildInfo{Settings: append(vcs, debug.BuildSetting{Key: "vcs.modified", Value: "true"})},
			"roost dev\ncommit 0123abcd (modified)\n" + goLine},
	}
	for _, tt := range tests {
		if got := versionText(tt.version, tt.bi); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}
