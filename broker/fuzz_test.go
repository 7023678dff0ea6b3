package broker

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// FuzzConnection feeds arbitrary bytes to a connection after a valid
// CONNECT (of each version) and requires that the broker neither panics nor
// hangs: it must answer and eventually close or keep serving.
func FuzzConnection(f *testing.F) {
	for _, seed := range [][]byte{
		{0x30, 0x05, 0x00, 0x01, 'a', 'h', 'i'},             // PUBLISH a "hi"
		{0x82, 0x06, 0x00, 0x01, 0x00, 0x01, '#', 0x01},     // SUBSCRIBE # QoS 1
		{0x34, 0x07, 0x00, 0x01, 'a', 0x00, 0x05, 'x', 'y'}, // PUBLISH QoS 2
		{0x62, 0x02, 0x00, 0x05},                            // PUBREL 5
		{0xa2, 0x05, 0x00, 0x02, 0x00, 0x01, 'a'},           // UNSUBSCRIBE a
		{0xc0, 0x00}, // PINGREQ
		{0xe0, 0x00}, // DISCONNECT
		{0x32, 0x08, 0x00, 0x01, 'a', 0x00, 0x00, 0x02, 0x23, 0x00},       // bad alias
		{0x82, 0x0a, 0x00, 0x01, 0x02, 0x0b, 0x01, 0x00, 0x01, '#', 0x04}, // v5 sub with id
	} {
		for v := range 3 {
			f.Add(byte(v), seed)
		}
	}
	f.Fuzz(func(t *testing.T, vsel byte, data []byte) {
		// A server per input: state one input leaves behind (retained
		// messages on random topics, sessions) must not slow down or
		// grow with the inputs after it.
		s, err := New(Options{SysInterval: -1, Logger: slog.New(slog.DiscardHandler), ConnectTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := s.Shutdown(ctx); err != nil {
				t.Errorf("Shutdown: %v", err)
			}
		}()
		s.onPanic = func(r any) { t.Errorf("panic: %v", r) }
		v := []packet.Version{packet.V31, packet.V311, packet.V5}[vsel%3]
		client, server := net.Pipe()
		defer client.Close()
		s.ServeConn(pipeConn{server})
		go io.Copy(io.Discard, client)
		connect, _ := (&packet.Connect{ProtocolVersion: v, ClientID: "fuzz", CleanStart: true, KeepAlive: 5}).Encode(nil, v)
		client.SetWriteDeadline(time.Now().Add(2 * time.Second))
		client.Write(connect)
		client.Write(data)
		client.Write([]byte{0xc0, 0x00}) // a PINGREQ after: the broker must still be alive or have closed
	})
}

// pipeConn gives net.Pipe a TCP-looking remote address.
type pipeConn struct{ net.Conn }

func (pipeConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }
