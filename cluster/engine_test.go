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

// lateWrite hands out the server's in-process connections; on the first
// one, the client's write of late (the handshake's CONNECT or PING)
// reaches the server only after delay: what a loaded host did to a
// starting node.
type lateWrite struct {
	srv   *server.Server
	late  string
	delay time.Duration
	conns atomic.Int32
}

func (p *lateWrite) InProcessConn() (net.Conn, error) {
	c, err := p.srv.InProcessConn()
	if err != nil || p.conns.Add(1) > 1 {
		return c, err
	}
	return &slowConn{Conn: c, late: []byte(p.late), delay: p.delay}, nil
}

// slowConn holds back a write that begins with late.
type slowConn struct {
	net.Conn
	late  []byte
	delay time.Duration
}

func (c *slowConn) Write(b []byte) (int, error) {
	if bytes.HasPrefix(b, c.late) {
		time.Sleep(c.delay)
	}
	return c.Conn.Write(b)
}

// TestConnectInProcessLate: a node's in-process handshake read late by
// its server, as at load 100-140 with race builds (hunta32's passes of
// TestRepro[A-G]: nodes exited at start, TestReproFenceWindowWatched's
// n2 among them). ping: the server sends a new client its first PING
// 2-2.4 s after its CONNECT; a client PING read later got the server's
// PING where nats.go wants a PONG ("nats: expected 'PONG', got 'PING'"):
// the connection is tried again. connect: a CONNECT read more than 2 s
// after the connection was made was closed ("nats: Authentication
// Timeout"), and at load every try was: the server waits inProcessBound
// for it, so the first try connects.
func TestConnectInProcessLate(t *testing.T) {
	for _, tt := range []struct {
		name, late string
		tries      int32 // at most
	}{
		{"ping", "PING\r\n", 2},
		{"connect", "CONNECT ", 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			opts := &server.Options{NoSigs: true}
			inProcessPort(opts, "tok")
			srv, err := server.NewServer(opts)
			if err != nil {
				t.Fatal(err)
			}
			srv.Start()
			defer srv.Shutdown()
			if !srv.ReadyForConnections(startupTimeout) {
				t.Fatal("server not ready")
			}
			p := &lateWrite{srv: srv, late: tt.late, delay: 3 * time.Second}
			nc, err := connectInProcess(p, "late", "tok", slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatalf("connect: %v (after %d tries)", err, p.conns.Load())
			}
			defer nc.Close()
			if n := p.conns.Load(); n > tt.tries {
				t.Fatalf("connected on try %d, want %d at most", n, tt.tries)
			}
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
