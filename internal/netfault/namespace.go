package netfault

import (
	"bufio"
	"context"
	"errors"

	"io"
	"log/slog"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Command returns a command that runs name in a new user and network
// namespace of its own (as `unshare -rn` does: this process's user becomes
// root inside, with its powers limited to the namespace), with InsideEnv
// set to marker so the program knows to call Setup. Its process group is
// its own, and it is killed if this process dies; strictly, if the thread
// that starts it ends: start and wait for it on a goroutine locked to its
// thread (runtime.LockOSThread), as Namespace does.
func Command(ctx context.Context, marker, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	outer, _ := os.Readlink("/proc/self/ns/net")
	cmd.Env = append(os.Environ(), InsideEnv+"="+marker, OuterEnv+"="+outer)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:                 syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET,
		UidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
		GidMappingsEnableSetgroups: false,
		Setpgid:                    true,
		Pdeathsig:                  syscall.SIGKILL,
	}
	// On cancel, the whole group: the program and what it started.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Namespace runs the calling test inside a private network namespace and
// returns its Net there; outside it returns nil, and the caller returns:
//
//	n := netfault.Namespace(t)
//	if n == nil {
//		return // it ran in its namespace
//	}
//
// Outside, it re-executes the test binary for this test alone
// (-test.run=^Name$) under Command, with env added to its environment,
// logs its output line by line, and fails t if it failed there (skips t
// if it skipped). Call it first in a top-level test, or first in a subtest
// whose parents do nothing before t.Run: they run again inside.
//
// Inside, it calls Setup (failing t on an error), logs every change to t,
// and heals when t ends. t is skipped, saying why, only when the kernel
// refuses to make the namespace.
func Namespace(t *testing.T, env ...string) *Net {
	t.Helper()
	if os.Getenv(InsideEnv) == t.Name() {
		n, err := Setup(slog.New(slog.NewTextHandler(tWriter{t}, nil)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := n.Heal(); err != nil {
				t.Error(err)
			}
		})
		return n
	}
	args := []string{"-test.run=" + runPattern(t.Name()), "-test.count=1", "-test.v"}
	if d, ok := t.Deadline(); ok {
		args = append(args, "-test.timeout="+time.Until(d).Round(time.Second).String())
	}
	cmd := Command(t.Context(), t.Name(), os.Args[0], args...)
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	// The child's death signal (Command) fires when the thread that
	// forked it ends, not this process (prctl(2), golang/go#27505): fork
	// and wait on this goroutine's own thread, which lives until then.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cmd.Start(); err != nil {
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EACCES) {
			t.Skipf("netfault: the kernel refuses a user and network namespace (%v): partition tests cannot run here", err)
		}
		t.Fatalf("netfault: starting %s in a namespace: %v", t.Name(), err)
	}
	skipped, passed, noTests := relay(t, out)
	err = cmd.Wait()
	switch {
	case noTests:
		t.Fatalf("netfault: %s did not run inside its namespace (pattern %q)", t.Name(), runPattern(t.Name()))
	case skipped && err == nil:
		t.Skip("skipped inside its namespace (see above)")
	case err != nil || !passed:
		t.Fatalf("netfault: %s failed inside its namespace: %v", t.Name(), err)
	}
	return nil
}

// relay logs the child's output to t, one line at a time, and reports
// whether it skipped or passed t's test and whether it ran no test at all.
func relay(t *testing.T, r io.Reader) (skipped, passed, noTests bool) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		t.Log(line)
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(trimmed, "--- SKIP: "+t.Name()+" ("):
			skipped = true
		case strings.HasPrefix(trimmed, "--- PASS: "+t.Name()+" ("):
			passed = true
		case strings.HasPrefix(trimmed, "testing: warning: no tests to run"):
			noTests = true
		}
	}
	return skipped, passed, noTests
}

// runPattern is the -test.run pattern matching the test named name (with
// its parents, as testing matches subtests level by level) and no other.
func runPattern(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return strings.Join(parts, "/")
}

// tWriter writes log lines to a test's log.
type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
