package broker

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// A reader held back because its client does not read its replies
// (waitOutput: more than maxOutBuffered unwritten) still applies what the
// client sent when the connection is taken over: here a client subscribes
// to 6 MB of retained QoS 1 messages, reads none, sends DISCONNECT and
// connects again. The DISCONNECT must count (no will), as it does for a
// reader that was not held back (settleTakeover, readPending).
func TestHeldReaderSeesDisconnectAtTakeover(t *testing.T) {
	t.Parallel()
	s, addr := startServer(t, Options{})
	watcher, pub := watchWills(t, addr)
	for i := range 30 {
		size := 200 << 10
		if i == 0 {
			size = 900 << 10 // more than the socket buffers take in
		}
		pub.Send(&packet.Publish{Topic: fmt.Sprintf("big/%d", i), QoS: 1, PacketID: uint16(i + 1), Retain: true, Payload: make([]byte, size)})
		if _, ok := pub.Next(5 * time.Second).(*packet.Puback); !ok {
			t.Fatal("no PUBACK for a retained message")
		}
	}

	c := dial(t, addr, packet.V5)
	c.Connect(&packet.Connect{ClientID: "held", CleanStart: true, WillFlag: true, WillTopic: "will/held", WillPayload: []byte("gone")})
	// Small socket buffers: the first message fills them.
	c.NC.(*net.TCPConn).SetReadBuffer(8 << 10)
	mqtttest.Eventually(t, 5*time.Second, func() bool { return setWriteBuffer(s, "held", 8<<10) })
	// Read nothing from here on. The first message blocks the flusher in
	// its write; the rest of them wait in the output, and the reader
	// after them.
	c.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "big/0", Options: packet.SubOptions{QoS: 1}}}})
	mqtttest.Eventually(t, 5*time.Second, func() bool { p, f, n := outputOf(s, "held"); return f && p == 0 && n == 1 })
	c.Send(&packet.Subscribe{PacketID: 2, Subscriptions: []packet.Subscription{{Filter: "big/#", Options: packet.SubOptions{QoS: 1}}}})
	// Retained messages may be appended after the reader went on (they are
	// authorized first): each PINGREQ sends it round its loop again.
	mqtttest.Eventually(t, 5*time.Second, func() bool {
		if heldReaders(s) == 1 {
			return true
		}
		c.Send(&packet.Pingreq{})
		return false
	})
	c.Send(&packet.Disconnect{})

	again := dial(t, addr, packet.V5)
	again.Connect(&packet.Connect{ClientID: "held", CleanStart: true})
	watcher.Send(&packet.Pingreq{})
	for {
		p := watcher.Next(10 * time.Second)
		if pp, ok := p.(*packet.Publish); ok {
			t.Fatalf("will published for a client that sent DISCONNECT: %s", pp.Topic)
		}
		if _, ok := p.(*packet.Pingresp); ok {
			break
		}
	}
}

// heldReaders counts connections whose reader waitOutput holds.
func heldReaders(s *Server) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for c := range s.conns {
		c.outMu.Lock()
		if c.ob != nil && c.ob.readWait != nil {
			n++
		}
		c.outMu.Unlock()
	}
	return n
}

// setWriteBuffer sets the socket send buffer of the connection of client
// id, once it is there.
func setWriteBuffer(s *Server, id string, n int) bool {
	c := connOf(s, id)
	return c != nil && c.nc.(*net.TCPConn).SetWriteBuffer(n) == nil
}

// connOf returns client id's connection, nil while it has none. Through
// its session, whose mu guards conn: the connection's own clientID and
// connected are its goroutine's (reading them under s.mu was a race).
func connOf(s *Server, id string) *conn {
	s.mu.Lock()
	ss := s.sessions[id]
	s.mu.Unlock()
	if ss == nil {
		return nil
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.conn
}

// outputOf returns the output of client id's connection that waits for the
// flusher, whether a flusher runs, and how many messages are in flight.
func outputOf(s *Server, id string) (pending int, flushing bool, inflight int) {
	c := connOf(s, id)
	if c == nil {
		return 0, false, 0
	}
	c.sess.mu.Lock()
	inflight = len(c.sess.inflight)
	c.sess.mu.Unlock()
	c.outMu.Lock()
	defer c.outMu.Unlock()
	return c.pending(), c.flushing, inflight
}
