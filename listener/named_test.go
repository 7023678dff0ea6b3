package listener

import (
	"net"
	"testing"
)

type idConn struct{ net.Conn }

func (idConn) CertIdentity() (string, bool) { return "device-7", true }

func TestNamedKeepsIdentity(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	for _, tc := range []struct {
		inner net.Conn
		id    string
		ok    bool
	}{{a, "", false}, {idConn{a}, "device-7", true}} {
		nc := &namedConn{Conn: tc.inner, name: "wss-public"}
		if nc.ListenerName() != "wss-public" || nc.NetConn() != tc.inner {
			t.Fatal("name or unwrap lost")
		}
		if id, ok := nc.CertIdentity(); id != tc.id || ok != tc.ok {
			t.Errorf("CertIdentity() = %q, %v; want %q, %v", id, ok, tc.id, tc.ok)
		}
	}
}
