package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
)

// runCmd runs roost in-process with args and returns the exit code and
// what it wrote.
func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return runCmdIn(t, strings.NewReader(""), args...)
}

// runCmdIn is runCmd with in as standard input.
func runCmdIn(t *testing.T, in io.Reader, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, stdio{in: in, out: &out, err: &errOut})
	return code, out.String(), errOut.String()
}

func TestUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args     []string
		code     int
		inStdout string
		inStderr string
	}{
		{nil, 2, "", "Commands:"},
		{[]string{"help"}, 0, "serve      run the broker", ""},
		{[]string{"--help"}, 0, "version    print version information", ""},
		{[]string{"frobnicate"}, 2, "", `roost: unknown command "frobnicate"`},
		{[]string{"help", "serve"}, 0, "", "Usage: roost serve [flags]"},
		{[]string{"serve", "-h"}, 0, "", "-log-format format"},
		{[]string{"version", "extra"}, 2, "", `roost version: unexpected argument "extra"`},
	}
	for _, tt := range tests {
		code, stdout, stderr := runCmd(t, tt.args...)
		if code != tt.code {
			t.Errorf("roost %q: exit %d, want %d", tt.args, code, tt.code)
		}
		if !strings.Contains(stdout, tt.inStdout) {
			t.Errorf("roost %q: stdout %q does not contain %q", tt.args, stdout, tt.inStdout)
		}
		if !strings.Contains(stderr, tt.inStderr) {
			t.Errorf("roost %q: stderr %q does not contain %q", tt.args, stderr, tt.inStderr)
		}
	}
}

// Every command answers -h with its own usage and exit code 0.
func TestEveryCommandHasHelp(t *testing.T) {
	t.Parallel()
	for _, c := range commands {
		code, _, stderr := runCmd(t, c.name, "-h")
		if code != 0 || !strings.Contains(stderr, "Usage: roost "+c.name) {
			t.Errorf("roost %s -h: exit %d, stderr %q", c.name, code, stderr)
		}
	}
}
