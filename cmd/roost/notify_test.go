package main

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Under systemd (Type=notify), roost serve says READY=1 once its listeners
// accept connections and STOPPING=1 when it shuts down.
func TestServeNotifiesServiceManager(t *testing.T) {
	// Serial: it sets NOTIFY_SOCKET and sends SIGHUP to the test process,
	// both seen by every serve running beside it.
	sock := filepath.Join(t.TempDir(), "notify")
	nc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	t.Setenv("NOTIFY_SOCKET", sock)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr syncBuffer
	exit := make(chan int, 1)
	go func() {
		exit <- run(ctx, []string{"serve", "--listen", "mqtt://127.0.0.1:0", "--memory"}, stdio{out: io.Discard, err: &stderr})
	}()
	next := func() string {
		t.Helper()
		nc.SetReadDeadline(time.Now().Add(20 * time.Second))
		b := make([]byte, 512)
		n, err := nc.Read(b)
		if err != nil {
			t.Fatalf("no notification: %v; log:\n%s", err, stderr.String())
		}
		return string(b[:n])
	}
	if got := next(); got != "READY=1" {
		t.Fatalf("first notification %q, want READY=1", got)
	}
	// Ready means ready: the listener takes a connection now.
	m := readyLine.FindStringSubmatch(stderr.String())
	if m == nil {
		t.Fatalf("READY=1 before the listener was logged ready:\n%s", stderr.String())
	}
	c, err := net.DialTimeout("tcp", m[1], 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if got := next(); got != "STATUS=serving MQTT on 1 listener(s)" {
		t.Fatalf("got %q", got)
	}
	// systemctl reload sends SIGHUP: with no certificates or auth files to
	// reload it must still not end the process (SIGHUP's default).
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !eventually(t, 10*time.Second, func() bool { return strings.Contains(stderr.String(), "SIGHUP") }) {
		t.Fatalf("SIGHUP not logged:\n%s", stderr.String())
	}
	cancel()
	if got := next(); got != "STOPPING=1" {
		t.Fatalf("got %q, want STOPPING=1", got)
	}
	select {
	case code := <-exit:
		if code != 0 {
			t.Fatalf("exit %d; log:\n%s", code, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not exit")
	}
}
