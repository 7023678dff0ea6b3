//go:build linux && !roost_portable

package broker

import (
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/mqtttest"
)

// readPending, for a connection being taken over, reads what its client
// had already sent; the kernel's count of unread bytes (FIONREAD) is not
// all of it on TLS: crypto/tls reads the socket in large pieces, keeping
// records whose data it has not returned yet, so a socket with nothing
// left can stand under a tls.Conn that still holds the client's last
// packets (a DISCONNECT deciding its will, say). Here the client's two
// records arrive in one segment, the first is read, and readPending must
// still return the second.
func TestReadPendingSeesRecordsTLSHolds(t *testing.T) {
	t.Parallel()
	srvConf, cliConf := tlsPair(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	held := &holdConn{Conn: raw}
	client, server := tls.Client(held, cliConf), tls.Server(sc, srvConf)
	hs := make(chan error, 1)
	go func() { hs <- server.Handshake() }()
	if err := client.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-hs; err != nil {
		t.Fatal(err)
	}

	held.hold = true
	client.Write([]byte("first"))
	client.Write([]byte("second"))
	n := held.flush(t)
	rc := rawConnOf(server)
	mqtttest.Eventually(t, 5*time.Second, func() bool { k, ok := socketPending(rc); return ok && k == n })
	buf := make([]byte, 64)
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if m, err := server.Read(buf); err != nil || string(buf[:m]) != "first" {
		t.Fatalf("first read: %q, %v", buf[:m], err)
	}
	if k, _ := socketPending(rc); k != 0 {
		t.Fatalf("the socket still holds %d bytes; the test needs both records read from it", k)
	}

	s, err := New(Options{SysInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	c := newConn(s, server)
	c.kick.Store(kickTakeover)
	server.SetReadDeadline(time.Now()) // as kickAfterPending does
	b := make([]byte, 0, 64)
	var by time.Time
	if !c.readPending(&b, &by) || string(b) != "second" {
		t.Fatalf("readPending read %q, want %q", b, "second")
	}
	if c.readPending(&b, &by) {
		t.Fatalf("readPending read more: %q", b)
	}
}
