package sdnotify

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func read(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 4096)
	n, err := c.Read(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(b[:n])
}

func TestNotify(t *testing.T) {
	for _, tc := range []struct{ name, env string }{
		{"path", filepath.Join(t.TempDir(), "notify")},
		{"abstract", "@roost-sdnotify-test-" + strings.ReplaceAll(t.Name(), "/", "-")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := tc.env
			if strings.HasPrefix(name, "@") {
				name = "\x00" + name[1:]
			}
			c := listen(t, name)
			n := New(tc.env)
			if !n.Enabled() {
				t.Fatal("not enabled")
			}
			if err := n.Ready(); err != nil {
				t.Fatal(err)
			}
			if got := read(t, c); got != "READY=1" {
				t.Fatalf("got %q", got)
			}
			n.Status("listening")
			if got := read(t, c); got != "STATUS=listening" {
				t.Fatalf("got %q", got)
			}
			n.Stopping()
			if got := read(t, c); got != "STOPPING=1" {
				t.Fatalf("got %q", got)
			}
		})
	}
}

func TestDisabled(t *testing.T) {
	n := New("")
	if n.Enabled() {
		t.Fatal("enabled without a socket")
	}
	if err := n.Ready(); err != nil {
		t.Fatal(err)
	}
}

func TestUnreachable(t *testing.T) {
	n := New(filepath.Join(t.TempDir(), "nobody"))
	if err := n.Ready(); err == nil {
		t.Fatal("no error for a socket nobody listens on")
	}
}
