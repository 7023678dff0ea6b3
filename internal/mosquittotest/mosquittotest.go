// Package mosquittotest runs a real mosquitto broker (the Debian package)
// for tests that compare Roost with the reference implementation or use it
// as a peer.
//
// Start writes a configuration into a temporary directory, starts
// mosquitto on 127.0.0.1 with a port picked for it, waits until every
// listener accepts connections and stops the broker when the test ends.
// mosquitto needs port numbers in its configuration rather than :0, so a
// port can be taken by someone else between picking and binding; Start
// then tries again with new ports. Extra listeners are written with the
// token {port}, which Start replaces with a fresh port each time it
// appears:
//
//	b := mosquittotest.Start(t, "log_type all",
//		"listener {port} 127.0.0.1", "protocol websockets")
//	ws := fmt.Sprintf("ws://127.0.0.1:%d/mqtt", b.Ports[0])
//
// A missing mosquitto fails the test rather than skipping it, as every
// caller in this repository wants: ./scripts/test.sh installs it, and a
// silently skipped comparison proves nothing.
package mosquittotest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/mqtttest"
)

// PortToken in a configuration line is replaced by a free port.
const PortToken = "{port}"

// attempts bounds how often Start retries after losing a port race.
const attempts = 5

// Path returns the mosquitto binary: on PATH or in /usr/sbin, which not
// every PATH has. The error says how to install it.
func Path() (string, error) {
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/sbin/mosquitto"); err == nil {
		return "/usr/sbin/mosquitto", nil
	}
	return "", errors.New("mosquitto not found: run ./scripts/test.sh, which installs mosquitto (apt-get install -y mosquitto)")
}

// Config is what Start writes beyond its defaults.
type Config struct {
	// Lines are appended to the configuration, after the default listener,
	// with every PortToken replaced by a port of its own.
	Lines []string
	// Output, when set, also receives mosquitto's log as it is written,
	// and showing it is the caller's business. Without it, the tail of the
	// log is logged when the test fails.
	Output io.Writer
}

// Broker is a running mosquitto.
type Broker struct {
	// Addr is the default MQTT listener, 127.0.0.1:port.
	Addr string
	// Port is Addr's port.
	Port int
	// Ports are the ports that replaced each PortToken, in order.
	Ports []int
	// Dir holds mosquitto.conf and, with "persistence true", mosquitto.db.
	Dir string
	// Log is everything mosquitto wrote to stdout and stderr.
	Log *mqtttest.LogBuffer

	bin    string
	conf   string
	output io.Writer
	cmd    *exec.Cmd
	exited chan struct{}
}

// Start starts mosquitto with the default configuration plus lines (see
// Config.Lines) and stops it with t. It fails t if mosquitto is missing or
// does not start.
func Start(t testing.TB, lines ...string) *Broker {
	t.Helper()
	return StartConfig(t, Config{Lines: lines})
}

// StartConfig is Start with a Config.
func StartConfig(t testing.TB, c Config) *Broker {
	t.Helper()
	bin, err := Path()
	if err != nil {
		t.Fatal(err)
	}
	b := &Broker{bin: bin, Dir: t.TempDir(), Log: &mqtttest.LogBuffer{}, output: c.Output}
	b.conf = filepath.Join(b.Dir, "mosquitto.conf")
	t.Cleanup(func() {
		b.Stop(syscall.SIGTERM)
		if t.Failed() && c.Output == nil {
			t.Logf("mosquitto log (tail):\n%s", tail(b.Log.String(), 100))
		}
	})
	n := 1
	for _, l := range c.Lines {
		n += strings.Count(l, PortToken)
	}
	for attempt := 1; ; attempt++ {
		ports := freePorts(t, n)
		b.Port, b.Ports = ports[0], ports[1:]
		b.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(b.Port))
		body := b.render(c.Lines)
		if err := os.WriteFile(b.conf, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		logged0 := len(b.Log.String())
		err := b.run()
		if err == nil {
			return b
		}
		if attempt == attempts {
			t.Fatalf("mosquitto did not start after %d attempts: %v\nconfig:\n%s\nlog:\n%s", attempts, err, body, tail(b.Log.String(), 40))
		}
		t.Logf("mosquitto attempt %d: %v; trying other ports\n%s", attempt, err, tail(b.Log.String()[logged0:], 10))
	}
}

// freePorts returns n distinct ports that were free a moment ago. The
// listeners stay open until all are chosen: one closed at once is often
// handed out again by the next Listen on :0.
//
// The ports are picked on the wildcard address, not 127.0.0.1, and never
// accept: mosquitto 2.0.11 binds a websockets listener to [::] whatever
// address its configuration names (libwebsockets takes "127.0.0.1" for an
// interface name, fails to find it and falls back to every address). Such
// a bind fails while any address has a socket on the port, a TIME_WAIT
// left by a load test on 127.0.0.2 included, which a port free on
// 127.0.0.1 alone often has on a busy machine.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		ln, err := net.Listen("tcp", ":0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ports[i] = ln.Addr().(*net.TCPAddr).Port
	}
	return ports
}

// render builds the configuration with b.Port and b.Ports.
func (b *Broker) render(lines []string) string {
	var s strings.Builder
	fmt.Fprintf(&s, "listener %d 127.0.0.1\n", b.Port)
	s.WriteString("allow_anonymous true\n")
	fmt.Fprintf(&s, "persistence_location %s/\n", b.Dir)
	s.WriteString("log_dest stderr\n")
	if os.Geteuid() == 0 {
		// Otherwise mosquitto drops to user "mosquitto", which cannot
		// read a configuration or write persistence in our temp dir.
		s.WriteString("user root\n")
	}
	next := 0
	for _, l := range lines {
		for strings.Contains(l, PortToken) {
			l = strings.Replace(l, PortToken, strconv.Itoa(b.Ports[next]), 1)
			next++
		}
		s.WriteString(l)
		s.WriteByte('\n')
	}
	return s.String()
}

// run starts the process and waits until every listener accepts TCP
// connections; on failure the process is gone when it returns.
func (b *Broker) run() error {
	var out io.Writer = b.Log
	if b.output != nil {
		out = io.MultiWriter(b.Log, b.output)
	}
	cmd := exec.Command(b.bin, "-c", b.conf)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	b.cmd, b.exited = cmd, exited
	// mosquitto takes seconds to exit after failing to open a listener
	// (it logs "Error: ..." at once); give up on the first error line.
	logged := len(b.Log.String())
	failed := func() bool {
		return mqtttest.Closed(exited)() || strings.Contains(b.Log.String()[logged:], ": Error: ")
	}
	for _, p := range append([]int{b.Port}, b.Ports...) {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
		if !mqtttest.WaitListening(addr, 10*time.Second, failed) {
			b.Stop(syscall.SIGKILL)
			return fmt.Errorf("not listening on %s", addr)
		}
	}
	return nil
}

// Stop ends mosquitto with sig: SIGTERM for a clean stop (it saves its
// persistence file), SIGKILL for a crash (it keeps only what it had
// saved). After 5 seconds it is killed. Stop on a stopped broker does
// nothing.
func (b *Broker) Stop(sig syscall.Signal) {
	if b.cmd == nil {
		return
	}
	b.cmd.Process.Signal(sig)
	select {
	case <-b.exited:
	case <-time.After(5 * time.Second):
		b.cmd.Process.Kill()
		<-b.exited
	}
	b.cmd = nil
}

// Restart starts a stopped broker again with the same configuration and
// ports, so clients reconnect to the same address and find what it had
// persisted. It fails t if mosquitto does not come up.
func (b *Broker) Restart(t testing.TB) {
	t.Helper()
	b.Stop(syscall.SIGTERM)
	if err := b.run(); err != nil {
		t.Fatalf("mosquitto restart: %v\nlog:\n%s", err, tail(b.Log.String(), 40))
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... %d lines omitted", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
