package interop

import (
	"bufio"
	"context"
	"io"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// procLifetime bounds every peer process; no scenario needs longer.
const procLifetime = 60 * time.Second

// proc is a peer process whose output is read line by line.
type proc struct {
	name string
	// stdinStops says the peer leaves cleanly when its stdin closes;
	// otherwise stop starts with SIGTERM.
	stdinStops bool
	cmd        *exec.Cmd
	stdin      io.WriteCloser
	logs       *logSink
	exited     chan struct{} // closed once the process has exited and its output is read
	err        error         // exit error, valid after exited
}

// startProc starts bin with args; onLine sees every output line. The process
// is ended when t ends: by closing stdin if stdinStops, else by SIGTERM (on
// which the mosquitto clients send DISCONNECT), then SIGKILL.
func startProc(t *testing.T, name string, stdinStops bool, onLine func(string), bin string, args ...string) *proc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), procLifetime)
	p := &proc{name: name, stdinStops: stdinStops, logs: newLogSink(t, name), exited: make(chan struct{})}
	p.cmd = exec.CommandContext(ctx, bin, args...)
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if stdinStops {
		p.cmd.Stderr = p.logs // node: stdout has all the JSON events
	} else {
		// The mosquitto clients print -d debug lines ("Subscribed") on
		// stderr and messages on stdout: read both.
		p.cmd.Stderr = p.cmd.Stdout
	}
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	p.logs.Write([]byte("$ " + p.cmd.String() + "\n"))
	if err := p.cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		defer cancel()
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.logs.Write([]byte(line + "\n"))
			onLine(line)
		}
		io.Copy(io.Discard, stdout)
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(p.stop)
	return p
}

// stop ends the process politely, then less so.
func (p *proc) stop() {
	p.stdin.Close()
	if p.stdinStops && p.waitExit(2*time.Second) {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if p.waitExit(3 * time.Second) {
		return
	}
	p.cmd.Process.Kill()
	<-p.exited
}

// kill ends the process at once, with no chance to send DISCONNECT.
func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.exited
}

// terminate sends SIGTERM, on which the mosquitto clients send DISCONNECT:
// reason Normal for 3.1.1, but 0x04 Disconnect with Will Message for 5.
func (p *proc) terminate(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	if !p.waitExit(5 * time.Second) {
		t.Fatalf("%s did not exit on SIGTERM", p.name)
	}
}

func (p *proc) waitExit(d time.Duration) bool {
	select {
	case <-p.exited:
		return true
	case <-time.After(d):
		return false
	}
}
