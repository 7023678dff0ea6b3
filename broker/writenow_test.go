package broker

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// A publisher that is not busy has its deliveries written at once by its
// own reader (Message.inline, flushNowLocked); when the subscriber's socket
// fills up the rest goes to the flusher. Either way every message arrives,
// once and in order, whether the publisher sends one packet per read (each
// answered before the next, so the inline path) or in bursts.
func TestInlineDeliveriesKeepOrderWhenSocketFills(t *testing.T) {
	t.Parallel()
	// The server's small send buffers fill long before the 1.5 MB sent, so
	// the inline writes meet a full socket. (Loopback's own send buffer
	// starts near 1.4 MB and held all of it.) The subscriber's receive
	// buffer stays as the kernel sizes it: one below the loopback MSS
	// reopens its window only through zero-window probes, whose backoff
	// grows while the subscriber does not read, so on a loaded machine,
	// where the first half took 8 s, the next byte came 6-7 s later.
	_, addr := startServerWrapped(t, Options{}, func(ln net.Listener) net.Listener { return mqtttest.SendBuffer(ln, 16<<10) })
	sub := dial(t, addr, packet.V311)
	sub.Connect(&packet.Connect{ClientID: "slow", CleanStart: true})
	sub.Subscribe("fill", 0)
	pub := dial(t, addr, packet.V311)
	pub.Connect(&packet.Connect{ClientID: "pub", CleanStart: true})
	const n = 1500 // 1.5 MB of payload: far below the slow-consumer bound
	payload := make([]byte, 1000)
	for i := range n {
		binary.BigEndian.PutUint32(payload, uint32(i))
		if i < n/2 {
			// One packet per read: the next publish waits for this one's
			// PUBACK, so the broker reads each alone and its publisher is
			// never busy.
			pub.Send(&packet.Publish{Topic: "fill", QoS: 1, PacketID: 1, Payload: payload})
			if _, ok := pub.Next(30 * time.Second).(*packet.Puback); !ok {
				t.Fatalf("message %d: no PUBACK", i)
			}
			continue
		}
		pub.Send(&packet.Publish{Topic: "fill", Payload: payload})
	}
	for i := range n {
		m, ok := sub.Next(30 * time.Second).(*packet.Publish)
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
