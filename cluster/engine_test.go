package cluster

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// latePing hands out the server's in-process connections; on the first
// one, the client's PING written after its CONNECT reaches the server
// only after delay: what a loaded host did to a starting node.
type latePing struct {
	srv   *server.Server
	delay time.Duration
	conns atomic.Int32
}

func (p *latePing) InProcessConn() (net.Conn, error) {
	c, err := p.srv.InProcessConn()
	if err != nil || p.conns.Add(1) > 1 {
		return c, err
	}
	return &slowPingConn{Conn: c, delay: p.delay}, nil
}

// slowPingConn holds back a write that is the handshake's PING.
type slowPingConn struct {
	net.Conn
	delay time.Duration
}

func (c *slowPingConn) Write(b []byte) (int, error) {
	if bytes.Equal(b, []byte("PING\r\n")) {
		time.Sleep(c.delay)
	}
	return c.Conn.Write(b)
}

// TestConnectInProcessLatePing: the server sends a new client its first
// PING 2-2.4 s after its CONNECT; a client PING read later than that got
// the server's PING where nats.go wants a PONG, and a node at load 100
// exited at start ("connecting in-process: nats: expected 'PONG', got
// 'PING'", TestReproFenceWindowWatched's n2, hunta32). The connection
// is tried again.
func TestConnectInProcessLatePing(t *testing.T) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, Authorization: "tok", NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	defer srv.Shutdown()
	if !srv.ReadyForConnections(startupTimeout) {
		t.Fatal("server not ready")
	}
	p := &latePing{srv: srv, delay: 3 * time.Second}
	nc, err := connectInProcess(p, "late-ping", "tok", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("connect: %v (after %d tries)", err, p.conns.Load())
	}
	defer nc.Close()
	if n := p.conns.Load(); n < 2 {
		t.Fatalf("connected on try %d: the first try's PING was not late enough to test the retry", n)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}
