package broker

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// startServer runs a Server on 127.0.0.1:0 for one test.
func startServer(t testing.TB, opts Options) (*Server, string) {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.SysInterval == 0 {
		opts.SysInterval = -1
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return s, ln.Addr().String()
}

// testClient speaks MQTT through the packet codec, one packet at a time.
type testClient struct {
	t  testing.TB
	nc net.Conn
	r  *packet.Reader
	v  packet.Version
}

func dial(t testing.TB, addr string, v packet.Version) *testClient {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &testClient{t: t, nc: nc, r: packet.NewReader(nc, 1<<20), v: v}
}

func (c *testClient) send(p packet.Packet) {
	c.t.Helper()
	b, err := p.Encode(nil, c.v)
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("write %s: %v", p.Type(), err)
	}
}

// next reads one packet within d; it fails the test on timeout.
func (c *testClient) next(d time.Duration) packet.Packet {
	c.t.Helper()
	p, err := c.read(d)
	if err != nil {
		c.t.Fatalf("reading packet: %v", err)
	}
	return p
}

func (c *testClient) read(d time.Duration) (packet.Packet, error) {
	c.nc.SetReadDeadline(time.Now().Add(d))
	return c.r.ReadPacket(c.v)
}

// connect sends CONNECT and expects a successful CONNACK.
func (c *testClient) connect(p *packet.Connect) *packet.Connack {
	c.t.Helper()
	p.ProtocolVersion = c.v
	c.send(p)
	ack, ok := c.next(2 * time.Second).(*packet.Connack)
	if !ok {
		c.t.Fatal("first packet is not CONNACK")
	}
	if ack.ReasonCode != 0 {
		c.t.Fatalf("CONNACK code 0x%02X", byte(ack.ReasonCode))
	}
	return ack
}

// expectClosed waits for the server to close the connection, returning the
// packets it sent before closing.
func (c *testClient) expectClosed(d time.Duration) []packet.Packet {
	c.t.Helper()
	var got []packet.Packet
	deadline := time.Now().Add(d)
	for {
		p, err := c.read(time.Until(deadline))
		if err == nil {
			got = append(got, p)
			continue
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isReset(err) {
			return got
		}
		c.t.Fatalf("connection not closed: %v (got %d packets)", err, len(got))
	}
}

func isReset(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && !oe.Timeout()
}

func netListen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }
