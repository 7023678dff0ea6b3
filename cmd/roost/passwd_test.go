package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/roost-mqtt/roost/auth"
)

// TestPasswd writes each scheme at its default cost, which is what a user
// gets. Every check verifies one (Argon2id: 19 MiB, about 0.5 CPU-s under
// -race), so a step that must leave an entry as it was compares the file
// instead of checking the password again.
func TestPasswd(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "passwd")
	check := func(user, pw string, ok bool) {
		t.Helper()
		p, err := auth.LoadPasswordFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.Check(user, []byte(pw)) == nil; got != ok {
			t.Errorf("%s/%s accepted=%v, want %v", user, pw, got, ok)
		}
	}
	mustRun := func(args ...string) {
		t.Helper()
		if code, _, stderr := runCmd(t, append([]string{"passwd"}, args...)...); code != 0 {
			t.Fatalf("roost passwd %q: exit %d: %s", args, code, stderr)
		}
	}
	if code, _, stderr := runCmd(t, "passwd", "-b", file, "alice", "a1"); code != 1 || !strings.Contains(stderr, "use -c") {
		t.Errorf("without -c on a missing file: exit %d, %s", code, stderr)
	}
	mustRun("-c", "-b", file, "alice", "a1")
	mustRun("-b", "-H", "sha512-pbkdf2", file, "bob", "b1")
	mustRun("-b", "-H", "bcrypt", file, "carol", "c1")
	check("alice", "a1", true)
	check("bob", "b1", true)
	check("carol", "c1", true)
	data, _ := os.ReadFile(file)
	if !strings.Contains(string(data), "alice:$argon2id$") || !strings.Contains(string(data), "bob:$7$") {
		t.Errorf("file:\n%s", data)
	}
	if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}

	// Not a terminal: the password is the first line of standard input.
	if code, _, stderr := runCmdIn(t, strings.NewReader("a2\nignored\n"), "passwd", file, "alice"); code != 0 {
		t.Fatalf("roost passwd from stdin: exit %d: %s", code, stderr)
	}
	check("alice", "a2", true)
	check("alice", "a1", false)
	before, _ := os.ReadFile(file)
	if code, _, stderr := runCmdIn(t, strings.NewReader("\n"), "passwd", file, "alice"); code != 2 || !strings.Contains(stderr, "must not be empty") {
		t.Errorf("empty password from stdin: exit %d, %s", code, stderr)
	}
	if after, _ := os.ReadFile(file); string(after) != string(before) {
		t.Errorf("a refused empty password changed the file:\n%s\nto:\n%s", before, after)
	}

	mustRun("-D", file, "bob")
	p, err := auth.LoadPasswordFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if p.Has("bob") || !p.Has("alice") || !p.Has("carol") {
		t.Errorf("after -D bob: bob %v, alice %v, carol %v; want only bob gone", p.Has("bob"), p.Has("alice"), p.Has("carol"))
	}
	if after, _ := os.ReadFile(file); !strings.Contains(string(after), aliceEntry(string(before))) {
		t.Errorf("-D bob changed alice's entry:\n%s", after)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"-D", file, "bob"}, 1, `no such user "bob"`},
		{[]string{"-b", file, "x:y", "p"}, 2, "must not contain ':'"},
		{[]string{"-b", file, "x"}, 2, "want 3 arguments, got 2"},
		{[]string{"-D", "-b", file, "x", "p"}, 2, "-D goes alone"},
		{[]string{"-b", "-H", "sha512", file, "x", "p"}, 2, "cannot write"},
		{[]string{"-b", file, "x", ""}, 2, "the password must not be empty"},
	} {
		code, _, stderr := runCmd(t, append([]string{"passwd"}, tc.args...)...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("roost passwd %q: exit %d, stderr %q; want %d and %q", tc.args, code, stderr, tc.code, tc.want)
		}
	}
}

// aliceEntry returns alice's line of a password file.
func aliceEntry(file string) string {
	for line := range strings.Lines(file) {
		if strings.HasPrefix(line, "alice:") {
			return line
		}
	}
	return "alice: not in the file"
}
