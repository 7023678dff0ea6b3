package broker

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// A publisher that is not busy has its deliveries written at once by its
// own reader (Message.inline, flushNowLocked); when the subscriber's socket
// fills up the rest goes to the flusher. Either way every message arrives,
// once and in order, whether the publisher sends one packet per read (each
// answered before the next, so the inline path) or in bursts.
func TestInlineDeliveriesKeepOrderWhenSocketFills(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, Options{})
	sub := dial(t, addr, packet.V311)
	// A small receive buffer (not tiny: below a few KiB the kernel reopens
	// the window only through its 200 ms zero-window probes) fills long
	// before the 1.5 MB sent, so the inline writes meet a full socket.
	sub.NC.(*net.TCPConn).SetReadBuffer(32 << 10)
	sub.Connect(&packet.Connect{ClientID: "slow", CleanStart: true})
	sub.Subscribe("fill", 0)
	pub := dial(t, addr, packet.V311)
	pub.Connect(&packet.Connect{ClientID: "pub", CleanStart: true})
	const n = 1500 // 1.5 MB of payload: far below the slow-consumer bound
	payload := make([]byte, 1000)
	for i := range n {
		binary.BigEndian.PutUint32(payload, uint32(i))
		pub.Send(&packet.Publish{Topic: "fill", Payload: payload})
		if i < n/2 {
			// One packet per read: the broker has answered this PINGREQ,
			// so it handled the publish, before the next one is sent.
			pub.Send(&packet.Pingreq{})
			if _, ok := pub.Next(5 * time.Second).(*packet.Pingresp); !ok {
				t.Fatalf("message %d: no PINGRESP", i)
			}
		}
	}
	for i := range n {
		m, ok := sub.Next(5 * time.Second).(*packet.Publish)
		if !ok || len(m.Payload) != len(payload) {
			t.Fatalf("message %d: got %v", i, m)
		}
		if got := binary.BigEndian.Uint32(m.Payload); got != uint32(i) {
			t.Fatalf("message %d: got message %d", i, got)
		}
		if !bytes.Equal(m.Payload[4:], payload[4:]) {
			t.Fatalf("message %d: payload changed", i)
		}
	}
}

// readThrough and opaque are TransparentConn wrappers, one promising that
// Read is the wrapped conn's.
type opaque struct{ net.Conn }

func (c opaque) NetConn() net.Conn { return c.Conn }
func (c opaque) ReadTimeoutSafe()  {}

type readThrough struct{ opaque }

func (readThrough) ReadThrough() {}

// Only wrappers that read through may be looked through for raw reads;
// TLS never.
func TestTCPBeneath(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	tc := nc.(*net.TCPConn)
	for _, tt := range []struct {
		name string
		nc   net.Conn
		want *net.TCPConn
	}{
		{"tcp", tc, tc},
		{"read-through wrappers", readThrough{opaque{readThrough{opaque{tc}}}}, tc},
		{"a wrapper that may read ahead", readThrough{opaque{opaque{tc}}}, nil},
		{"tls", tls.Client(tc, &tls.Config{}), nil},
		{"read-through over tls", readThrough{opaque{tls.Client(tc, &tls.Config{})}}, nil},
	} {
		if got := tcpBeneath(tt.nc); got != tt.want {
			t.Errorf("%s: tcpBeneath = %v, want %v", tt.name, got, tt.want)
		}
	}
}
