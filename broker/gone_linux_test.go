//go:build linux && !roost_portable

package broker

import (
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/listener"
)

// clientGone, on every transport: false while the client is connected,
// true once it closed the connection (its FIN reached the socket beneath
// TLS, the listener's wrappers and WebSocket), and false on plain TCP when
// the client sent more after its CONNECT before closing (a script piping
// packets into a socket is not a client that gave up).
func TestClientGoneEveryTransport(t *testing.T) {
	t.Parallel()
	srvConf, cliConf := tlsPair(t)
	type pair struct{ server, client net.Conn }
	plain := func(t *testing.T) pair {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		return accept(t, listener.Named(ln, "n"), func(addr string) (net.Conn, error) { return net.Dial("tcp", addr) })
	}
	for _, tc := range []struct {
		name string
		open func(t *testing.T) pair
	}{
		{"tcp", plain},
		{"tls", func(t *testing.T) pair {
			ln, err := tls.Listen("tcp", "127.0.0.1:0", srvConf)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			p := accept(t, ln, func(addr string) (net.Conn, error) {
				raw, err := net.Dial("tcp", addr)
				if err != nil {
					return nil, err
				}
				return tls.Client(raw, cliConf), nil
			})
			hs := make(chan error, 1)
			go func() { hs <- p.client.(*tls.Conn).Handshake() }()
			if err := p.server.(*tls.Conn).Handshake(); err != nil {
				t.Fatal(err)
			}
			if err := <-hs; err != nil {
				t.Fatal(err)
			}
			return p
		}},
		{"ws", func(t *testing.T) pair {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			wl := listener.WebSocket(ln, listener.WSOptions{AnyPath: true})
			t.Cleanup(func() { wl.Close() })
			return accept(t, wl, func(addr string) (net.Conn, error) {
				d := websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: 5 * time.Second}
				ws, _, err := d.Dial("ws://"+addr+"/mqtt", nil)
				if err != nil {
					return nil, err
				}
				return ws.NetConn(), nil
			})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.open(t)
			c := &conn{nc: p.server, lone: true}
			if c.clientGone() {
				t.Fatal("gone while the client is connected")
			}
			p.client.Close()
			mqtttest.Eventually(t, 5*time.Second, c.clientGone)
		})
	}
	t.Run("tcp sent more", func(t *testing.T) {
		p := plain(t)
		p.client.Write([]byte{0xE0, 0x00}) // DISCONNECT after the CONNECT
		p.client.Close()
		c := &conn{nc: p.server, lone: true}
		rc := socketBeneath(p.server)
		mqtttest.Eventually(t, 5*time.Second, func() bool { return peerClosed(rc) })
		if c.clientGone() {
			t.Fatal("gone although the client sent a packet after its CONNECT")
		}
	})
}

// accept dials ln with dial and returns the accepted conn and the client's.
func accept(t *testing.T, ln net.Listener, dial func(addr string) (net.Conn, error)) (p struct{ server, client net.Conn }) {
	t.Helper()
	got := make(chan net.Conn, 1)
	go func() {
		sc, err := ln.Accept()
		if err != nil {
			t.Error(err)
		}
		got <- sc
	}()
	cc, err := dial(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	select {
	case sc := <-got:
		if sc == nil {
			t.FailNow()
		}
		t.Cleanup(func() { sc.Close() })
		p.server, p.client = sc, cc
	case <-time.After(10 * time.Second):
		t.Fatal("no connection accepted")
	}
	return p
}
