package listeners

import (
	"crypto/tls"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// A TLS read can return data and a timeout at once: after it has returned
// a record's data, crypto/tls reads on when the next record in its buffer
// is an alert (to report a close_notify with the data), and when only
// part of that record has arrived the read waits for the rest until the
// deadline and returns the data with the timeout. The broker must handle
// the data (here a PINGREQ: PINGRESP) and read on, not drop it and end the
// connection as if its keep alive had run out. TLS 1.2, where an alert
// record shows its type; the client sends the PINGREQ's record and the
// first three bytes of an alert record's header in one TCP segment.
func TestTLSDataBeforePartialAlert(t *testing.T) {
	s := newServer(t)
	e := serveTransports(t, s)
	nc, err := net.Dial("tcp", e.tls)
	if err != nil {
		t.Fatal(err)
	}
	tail := &alertTailConn{Conn: nc}
	conf := e.tlsConf.Clone()
	conf.MaxVersion = tls.VersionTLS12
	tc := tls.Client(tail, conf)
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c := mqttClient(t, tc, packet.V5)
	c.Connect(&packet.Connect{ProtocolName: "MQTT", CleanStart: true, KeepAlive: 30, ClientID: "partial-alert"})
	tail.armed.Store(true)
	c.Send(&packet.Pingreq{})
	p, err := c.Read(5 * time.Second)
	if _, ok := p.(*packet.Pingresp); !ok {
		t.Fatalf("want PINGRESP, got %v (err %v)", p, err)
	}
}

// alertTailConn, once armed, adds the first three bytes of a TLS 1.2 alert
// record's header (type 21, version 3.3) to its next Write.
type alertTailConn struct {
	net.Conn
	armed atomic.Bool
}

func (c *alertTailConn) Write(b []byte) (int, error) {
	if !c.armed.CompareAndSwap(true, false) {
		return c.Conn.Write(b)
	}
	n, err := c.Conn.Write(append(append([]byte(nil), b...), 21, 3, 3))
	return min(n, len(b)), err
}
