package clustertest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/roost-mqtt/roost/internal/eventually"
	"github.com/roost-mqtt/roost/internal/testport"
)

// Proc is one process of the roost binary that a test starts, hurts
// (SIGKILL, SIGSTOP) and starts again on the same log, appended to across
// starts. Its methods return errors instead of failing a test, so that a
// goroutine other than the test's (test/jepsen's nemesis) may call them;
// Node wraps it for tests. Every wait is bounded.
type Proc struct {
	// Name names the process in errors.
	Name string
	// Bin is the roost binary.
	Bin string
	// LogPath is the file its stdout and stderr are appended to.
	LogPath string
	// Env are KEY=VALUE pairs added to the test process's environment,
	// which the process inherits otherwise; set it before Start, not
	// while another goroutine may call Start.
	Env []string

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	starts int
	exit   string // how the last process ended, for errors
}

// ErrNotStarted is returned by Signal before the first Start.
var ErrNotStarted = errors.New("clustertest: process not started")

// Start starts the process with args (e.g. "serve", ...), the first time
// or again after it ended; it refuses to start one that still runs. It
// does not wait for the process to be ready.
func (p *Proc) Start(args ...string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		select {
		case <-p.done:
		default:
			return fmt.Errorf("clustertest: start of %s while it runs", p.Name)
		}
	}
	logf, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.Bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if len(p.Env) > 0 {
		cmd.Env = append(os.Environ(), p.Env...)
	}
	// A test binary that dies (a -timeout panic skips the cleanups) takes
	// its processes with it rather than leaving them to run on. The
	// kernel sends the death signal when the *thread* that forked the
	// child ends, not the process (prctl(2), golang/go#27505): the child
	// is forked and waited for on a goroutine locked to its thread, so
	// that thread lives as long as the child and never runs a goroutine
	// that could end it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		err := cmd.Wait()
		logf.Close()
		// An exit with nothing in the log says only this: a signal
		// (SIGKILL from outside) or an exit status.
		exit := "exited"
		if err != nil {
			exit = err.Error()
		}
		p.mu.Lock()
		p.exit = exit
		p.mu.Unlock()
		close(done)
	}()
	if err := <-started; err != nil {
		logf.Close()
		return fmt.Errorf("clustertest: starting %s: %w", p.Name, err)
	}
	p.cmd, p.done = cmd, done
	p.starts++
	return nil
}

// Starts is how many times the process was started.
func (p *Proc) Starts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.starts
}

// Pid is the process id of the current process (0 before the first
// start).
func (p *Proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Exit says how the last process ended ("exited" for status 0, else
// e.g. "signal: killed"); empty while it runs.
func (p *Proc) Exit() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		return ""
	}
	select {
	case <-p.done:
		return p.exit
	default:
		return ""
	}
}

// Done is closed when the current process has ended (nil before the first
// start).
func (p *Proc) Done() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// Signal sends sig to the current process.
func (p *Proc) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return fmt.Errorf("%w: %s", ErrNotStarted, p.Name)
	}
	return p.cmd.Process.Signal(sig)
}

// Kill sends SIGKILL (kill -9) and waits up to within for the process to
// end.
func (p *Proc) Kill(within time.Duration) error {
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	select {
	case <-p.Done():
		return nil
	case <-time.After(within):
		return fmt.Errorf("clustertest: %s still running %v after SIGKILL", p.Name, within)
	}
}

// Pause sends SIGSTOP and waits, up to 5 s, until the kernel reports the
// process stopped: kill(2) returns before it is.
func (p *Proc) Pause() error {
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		return err
	}
	stat := fmt.Sprintf("/proc/%d/stat", p.Pid())
	if !eventually.Within(5*time.Second, func() bool {
		b, err := os.ReadFile(stat)
		// The state follows the parenthesised command name.
		_, rest, ok := strings.Cut(string(b), ") ")
		return err == nil && ok && strings.HasPrefix(rest, "T")
	}) {
		return fmt.Errorf("clustertest: %s not stopped 5 s after SIGSTOP", p.Name)
	}
	return nil
}

// Resume continues a paused process (SIGCONT).
func (p *Proc) Resume() error { return p.Signal(syscall.SIGCONT) }

// Stop ends the process as an operator would: SIGCONT (a stopped process
// would never handle what follows), SIGTERM, and a wait of up to within;
// then SIGKILL and a wait for the end. It reports whether it had to kill.
// A process never started, or already ended, is left alone.
func (p *Proc) Stop(within time.Duration) (killed bool) {
	done := p.Done()
	if done == nil {
		return false
	}
	p.Signal(syscall.SIGCONT)
	p.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return false
	case <-time.After(within):
		p.Signal(syscall.SIGKILL)
		<-done
		return true
	}
}

// FreeAddr returns HOST:PORT with a TCP port free on ip and reserved for
// this process (testport.Reserve): a node keeps its ports across
// restarts, and a port from the kernel's ephemeral range could be taken
// while the node is down by another node's outgoing connection from the
// same 127.0.0.x.
func FreeAddr(ip string) (string, error) {
	port, err := testport.Reserve(ip)
	if err != nil {
		return "", fmt.Errorf("clustertest: %w", err)
	}
	return net.JoinHostPort(ip, strconv.Itoa(port)), nil
}
