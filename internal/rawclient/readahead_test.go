package rawclient

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// A read deadline on a readAheadConn ends one wait only; data written
// afterwards is still read, and the end of the stream is io.EOF.
func TestReadAheadDeadline(t *testing.T) {
	server, client := net.Pipe()
	c := newReadAhead(client)
	defer c.Close()
	buf := make([]byte, 8)
	c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	if _, err := c.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("quiet read: %v, want a deadline error", err)
	}
	var ne net.Error
	if _, err := c.Read(buf); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("second read past the deadline: %v, want a timeout", err)
	}
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	go func() {
		server.Write([]byte("abc"))
		server.Close()
	}()
	n, err := io.ReadFull(c, buf[:3])
	if err != nil || string(buf[:n]) != "abc" {
		t.Fatalf("after a timeout: %q, %v; want abc", buf[:n], err)
	}
	if _, err := c.Read(buf); err != io.EOF {
		t.Fatalf("at the end: %v, want io.EOF", err)
	}
}

// A client that stops reading pushes back: the pump stops taking bytes
// once readAheadMax wait unread.
func TestReadAheadBounded(t *testing.T) {
	server, client := net.Pipe()
	c := newReadAhead(client)
	defer c.Close()
	wrote := make(chan int, 1)
	go func() {
		n, _ := server.Write(make([]byte, 4*readAheadMax))
		wrote <- n
	}()
	held := func() int {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.buf)
	}
	for deadline := time.Now().Add(5 * time.Second); held() < readAheadMax; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d bytes read ahead after 5s", held())
		}
	}
	// The pump must now stay put: give it a moment to (wrongly) go on.
	select {
	case n := <-wrote:
		t.Fatalf("the writer finished (%d bytes) with nobody reading", n)
	case <-time.After(100 * time.Millisecond):
	}
	if n := held(); n >= readAheadMax+16<<10 {
		t.Fatalf("%d bytes read ahead, want less than %d", n, readAheadMax+16<<10)
	}
	got, _ := io.ReadFull(c, make([]byte, 4*readAheadMax))
	if got != 4*readAheadMax {
		t.Fatalf("read %d bytes, want %d", got, 4*readAheadMax)
	}
	if n := <-wrote; n != 4*readAheadMax {
		t.Fatalf("wrote %d", n)
	}
}
