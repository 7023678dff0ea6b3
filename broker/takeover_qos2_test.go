package broker

import (
	"context"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// A QoS 2 PUBLISH that the old connection's reader still holds when a new
// connection takes the session over is not routed: the client sends it
// again on the new connection, whose PUBREL may release the packet id
// before the old reader gets to its copy, which would then be delivered a
// second time. (Found by the client's TestKillDuringQoS2 under CPU load:
// the reader had a batch of PUBLISHes in its buffer when the network was
// cut.) settleTakeover lets the old reader apply what it holds first, but
// only for settleTimeout; the heldConn below keeps the old reader between
// reading the PUBLISH and handling it for longer, as a loaded machine can,
// so the takeover goes ahead without it and the order is certain.
func TestTakenOverReaderRoutesNoQoS2(t *testing.T) {
	t.Parallel()
	_, ln := serveHolding(t)
	inner := ln.Listener
	addr := inner.Addr().String()

	sub := dial(t, addr, packet.V311)
	sub.Connect(&packet.Connect{ClientID: "sub", CleanStart: true})
	sub.Subscribe("t", 2)

	g := &heldConn{reached: make(chan struct{}), release: make(chan struct{})}
	ln.next.Store(g)
	old := dial(t, addr, packet.V311)
	old.Connect(&packet.Connect{ClientID: "pub", CleanStart: false})
	g.armed.Store(true)
	old.Send(&packet.Publish{Topic: "t", QoS: 2, PacketID: 1, Payload: []byte("once")})
	select {
	case <-g.reached:
	case <-time.After(10 * time.Second):
		t.Fatal("the old connection's reader never read the PUBLISH")
	}

	// The client reconnects and sends the PUBLISH again, then PUBREL.
	cur := dial(t, addr, packet.V311)
	cur.Send(&packet.Connect{ProtocolVersion: packet.V311, ClientID: "pub", CleanStart: false})
	// CONNACK comes once settleTakeover gives up on the held reader.
	if ack, ok := cur.Next(settleTimeout + 10*time.Second).(*packet.Connack); !ok || ack.ReasonCode != 0 || !ack.SessionPresent {
		t.Fatalf("got %v, want CONNACK with the session present", ack)
	}
	cur.Send(&packet.Publish{Topic: "t", QoS: 2, PacketID: 1, Dup: true, Payload: []byte("once")})
	if p, ok := cur.Next(5 * time.Second).(*packet.Pubrec); !ok || p.PacketID != 1 {
		t.Fatalf("got %v, want PUBREC 1", p)
	}
	cur.Send(&packet.Pubrel{PacketID: 1})
	if p, ok := cur.Next(5 * time.Second).(*packet.Pubcomp); !ok || p.PacketID != 1 {
		t.Fatalf("got %v, want PUBCOMP 1", p)
	}

	// The old reader handles its copy now, then its connection closes.
	close(g.release)
	old.ExpectClosed(10 * time.Second)
	cur.Send(&packet.Publish{Topic: "t", Payload: []byte("marker")})
	for _, want := range []string{"once", "marker"} {
		p, ok := sub.Next(5 * time.Second).(*packet.Publish)
		if !ok || string(p.Payload) != want {
			t.Fatalf("subscriber got %v, want %q (a copy routed by the taken-over reader comes before the marker)", p, want)
		}
	}
}

// holdListener hands out its conns as they are, except the one accepted
// after next was set, which it wraps in that heldConn.
// serveHolding runs a server on a listener whose next accepted
// connection can be held (holdListener), shut down when t ends.
func serveHolding(t *testing.T) (*Server, *holdListener) {
	t.Helper()
	s, err := New(Options{Logger: slog.New(slog.DiscardHandler), SysInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	inner, err := netListen()
	if err != nil {
		t.Fatal(err)
	}
	ln := &holdListener{Listener: inner}
	go s.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	return s, ln
}

type holdListener struct {
	net.Listener
	next atomic.Pointer[heldConn]
}

func (l *holdListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if g := l.next.Swap(nil); g != nil {
		g.Conn = c
		return g, nil
	}
	return c, nil
}

// heldConn is a conn whose Read, once armed, returns what it read only after
// release is closed (closing reached when it starts waiting): a reader that
// has bytes but has not handled them yet. Deadlines set meanwhile do not
// interrupt it, as they do not interrupt a reader working through its
// buffer.
type heldConn struct {
	net.Conn
	armed   atomic.Bool
	waited  atomic.Bool
	reached chan struct{}
	release chan struct{}
}

func (g *heldConn) Read(b []byte) (int, error) {
	n, err := g.Conn.Read(b)
	if n > 0 && g.armed.Load() && g.waited.CompareAndSwap(false, true) {
		close(g.reached)
		<-g.release
	}
	return n, err
}
