package mqtttest

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/testport"
)

// FreePort returns a port free on 127.0.0.1 and reserved for this
// process (testport.Reserve), for peers (mosquitto) that need a number in
// their config rather than :0, and servers restarted on the same port.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := testport.Reserve("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// WaitListening polls addr until it accepts a TCP connection (true), the
// process behind it exits (exited reports true), or within passes.
func WaitListening(addr string, within time.Duration, exited func() bool) bool {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if exited != nil && exited() {
			return false
		}
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// LogBuffer collects output (broker logs, a peer's stderr) from several
// goroutines so a test can search it.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Closed returns a probe for WaitListening that reports whether ch is
// closed (a process-exited signal).
func Closed(ch <-chan struct{}) func() bool {
	return func() bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
}

// WriteFile replaces name with data atomically: it writes a temporary file
// in the same directory, gives it the modification time mod (unless mod is
// zero) and renames it over name. A watcher polling name (certificates,
// ACLs, the password file) sees the old file or the new one, never a
// half-written one, and sees the new time with the new content.
func WriteFile(t testing.TB, name string, data []byte, mod time.Time) {
	t.Helper()
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".tmp*")
	if err != nil {
		t.Fatal(err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o600)
	}
	if err == nil && !mod.IsZero() {
		err = os.Chtimes(tmp, mod, mod)
	}
	if err == nil {
		err = os.Rename(tmp, name)
	}
	if err != nil {
		os.Remove(tmp)
		t.Fatal(err)
	}
}

// SendBuffer wraps ln so that each TCP connection it accepts has a send
// buffer of n bytes: a server's writes then meet a full socket soon
// (loopback's own send buffer starts near 1.4 MB) while its client reads
// when it likes. A small receive buffer on the client instead stalls:
// below the loopback MSS the window reopens only at a zero-window probe,
// whose backoff grows while the client does not read.
func SendBuffer(ln net.Listener, n int) net.Listener { return sendBuffer{ln, n} }

type sendBuffer struct {
	net.Listener
	n int
}

func (l sendBuffer) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(l.n)
	}
	return c, err
}
