package cluster

import (
	"bytes"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// TestConnectInProcessPingFirst: nats-server sends a new client its first
// PING 2 to 2.4 s after the connection opens; a node whose server had not
// answered its own client's CONNECT and PING by then (a loaded host) got
// the PING first, and nats.go failed the handshake ("nats: expected
// 'PONG', got 'PING'"): the node exited at its start. Here the first
// connection's PING reaches the server 3 s after its CONNECT (the server
// starts the 2 s when it reads the CONNECT), so the server's PING comes
// first; the node connects on its next try.
func TestConnectInProcessPingFirst(t *testing.T) {
	t.Parallel()
	const token = "t"
	// AuthTimeout past the hold: a client whose CONNECT came later than
	// it (default 2 s) gets "Authentication Timeout", a failure the retry
	// covers as well; the PING is the one seen.
	srv, err := server.NewServer(&server.Options{DontListen: true, Authorization: token, AuthTimeout: 10, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(startupTimeout) {
		t.Fatal("server not ready")
	}
	p := &slowFirstConnect{InProcessConnProvider: srv, hold: 3 * time.Second}
	nc, err := connectInProcess(p, "roost-test", token, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("connect: %v (connections opened: %d)", err, p.opened())
	}
	defer nc.Close()
	if err := nc.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	if p.opened() == 1 {
		// The server's first PING timer fired more than 0.6 s late (a
		// starved process), after the held CONNECT was answered.
		t.Skip("the first handshake passed: the server's PING came after its PONG")
	}
}

// slowFirstConnect holds the PING of its first connection's first write
// (the client's CONNECT and PING) for hold.
type slowFirstConnect struct {
	nats.InProcessConnProvider
	hold time.Duration
	mu   sync.Mutex
	n    int
}

func (s *slowFirstConnect) InProcessConn() (net.Conn, error) {
	c, err := s.InProcessConnProvider.InProcessConn()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	if s.n == 1 {
		return &heldPing{Conn: c, hold: s.hold}, nil
	}
	return c, nil
}

func (s *slowFirstConnect) opened() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// heldPing is a connection whose first PING (after the CONNECT) waits
// hold.
type heldPing struct {
	net.Conn
	hold time.Duration
	held bool
}

func (c *heldPing) Write(b []byte) (int, error) {
	i := bytes.Index(b, []byte("PING\r\n"))
	if c.held || i < 0 {
		return c.Conn.Write(b)
	}
	c.held = true // nats.go writes from one goroutine during the handshake
	n, err := c.Conn.Write(b[:i])
	if err != nil {
		return n, err
	}
	time.Sleep(c.hold)
	m, err := c.Conn.Write(b[i:])
	return n + m, err
}
