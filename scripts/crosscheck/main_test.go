package main

import (
	"os"
	"strings"
	"testing"
)

// TestCheckFindsPlatformErrors type-checks a module that uses a Unix-only
// call: it must pass for Linux and macOS and fail for Windows naming the
// call, so the test command's cross check can fail.
func TestCheckFindsPlatformErrors(t *testing.T) {
	t.Chdir("testdata/unixonly")
	for _, tc := range []struct {
		goos, goarch string
		want         string // "" means no error
	}{
		{"linux", "amd64", ""},
		{"darwin", "arm64", ""},
		{"windows", "amd64", "undefined: syscall.Kill"},
		{"windows", "arm64", "undefined: syscall.Kill"},
	} {
		err := check(tc.goos, tc.goarch, []string{"."})
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s/%s: %v", tc.goos, tc.goarch, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s/%s: error %v, want one containing %q", tc.goos, tc.goarch, err, tc.want)
		}
	}
}

func TestCheckUnknownArchitecture(t *testing.T) {
	t.Chdir("testdata/unixonly")
	if err := check("linux", "pdp11", []string{"."}); err == nil {
		t.Fatal("no error for GOARCH pdp11")
	}
}

func TestMain(m *testing.M) {
	// go list must not pick up a -mod or -tags of the caller's GOFLAGS
	// that the test module does not know.
	os.Unsetenv("GOFLAGS")
	os.Exit(m.Run())
}
