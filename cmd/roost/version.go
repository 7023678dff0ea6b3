package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// version is set at link time: go build -ldflags "-X main.version=v1.2.3".
var version = "dev"

func runVersion(ctx context.Context, args []string, std stdio) int {
	stdout, stderr := std.out, std.err
	fs := newFlagSet("version", "", "Prints the Roost version, the commit it was built from and the Go version.", stderr)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	bi, _ := debug.ReadBuildInfo()
	fmt.Fprint(stdout, versionText(version, bi))
	return 0
}

// versionText formats what roost version prints. bi may be nil.
func versionText(v string, bi *debug.BuildInfo) string {
	var b strings.Builder
	fmt.Fprintf(&b, "roost %s\n", resolveVersion(v, bi))
	if rev, modified := vcs(bi); rev != "" {
		if modified {
			rev += " (modified)"
		}
		fmt.Fprintf(&b, "commit %s\n", rev)
	}
	fmt.Fprintf(&b, "built with %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return b.String()
}

// resolveVersion is v, or when v is the "dev" default the module version
// that go install ...@v1.2.3 records in the build info.
func resolveVersion(v string, bi *debug.BuildInfo) string {
	if v == "dev" && bi != nil && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return v
}

func vcs(bi *debug.BuildInfo) (rev string, modified bool) {
	if bi == nil {
		return "", false
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	return rev, modified
}
