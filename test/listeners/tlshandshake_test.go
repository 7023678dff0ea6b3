package listeners

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/listener"
	"github.com/roost-mqtt/roost/packet"
)

// The TLS handshake has handshake_timeout, and limits.connect_timeout
// counts from its end (docs/config.md): a client whose handshake takes
// longer than the connect timeout, but not the handshake timeout, gets
// its CONNACK. With the handshake on the broker's first Read it ran under
// the connect timeout, and a loaded machine's slow handshake met a closed
// conn (TestClusterTransports/Routing: "write: broken pipe" on CONNECT,
// which the slow certificate check here gives with the lazy handshake).
func TestTLSConnectTimeoutAfterHandshake(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	s := newServerWith(t, broker.Options{MaxPacketSize: 256 << 10, ConnectTimeout: 2 * time.Second})
	addr := s.serve(listener.TLSWith(s.tcp(), p.manager(t, listener.TLSOptions{}),
		listener.TLSListenOptions{HandshakeTimeout: 30 * time.Second, Logf: s.log.Info}))
	const slow = 3 * time.Second // past the connect timeout
	for _, tc := range []struct {
		name        string
		beforeHello time.Duration // the client's first flight comes late
		verify      time.Duration // the client checks the server's certificate slowly
	}{
		{"late ClientHello", slow, 0},
		{"slow certificate check", 0, slow},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			raw, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(tc.beforeHello)
			cfg := &tls.Config{RootCAs: pool(t, p.ca), ServerName: "localhost",
				VerifyConnection: func(tls.ConnectionState) error { time.Sleep(tc.verify); return nil }}
			conn := tls.Client(raw, cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := conn.HandshakeContext(ctx); err != nil {
				t.Fatalf("handshake: %v", err)
			}
			c := mqttClient(t, conn, packet.V311)
			if err := c.NC.SetWriteDeadline(time.Now().Add(10 * time.Second)); err != nil {
				t.Fatal(err)
			}
			b, err := connect("slow-handshake").Encode(nil, packet.V311)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.NC.Write(b); err != nil {
				t.Fatalf("CONNECT right after a handshake that outlasted the connect timeout: %v", err)
			}
			if got, err := c.Read(10 * time.Second); err != nil {
				t.Fatalf("CONNECT right after a handshake that outlasted the connect timeout: %v, want CONNACK", err)
			} else if ack, ok := got.(*packet.Connack); !ok || ack.ReasonCode != 0 {
				t.Fatalf("got %v, want CONNACK 0", got)
			}
		})
	}
}

// A conn that stalls its handshake is closed after the listener's
// handshake timeout, however long the connect timeout, and reported; a
// client behind it connects meanwhile.
func TestTLSHandshakeTimeout(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	s := newServerWith(t, broker.Options{MaxPacketSize: 256 << 10, ConnectTimeout: time.Minute})
	addr := s.serve(listener.TLSWith(s.tcp(), p.manager(t, listener.TLSOptions{}),
		listener.TLSListenOptions{HandshakeTimeout: 500 * time.Millisecond, Logf: s.log.Info}))
	stalled, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	nc, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool(t, p.ca), ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	mqttClient(t, nc, packet.V311).Connect(connect("not-stalled"))
	stalled.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := stalled.Read(make([]byte, 1)); timeoutErr(err) == err {
		t.Fatal("stalled handshake's conn still open 20 s later; handshake timeout 500ms")
	}
	s.waitLog(t, "connection refused", "TLS handshake not done within 500ms")
}
