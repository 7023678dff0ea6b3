package jepsen

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// conn is a bare MQTT 5 connection. The checker speaks the protocol
// itself rather than through a client library: it must see every packet
// (DUP, packet ids, session present), decide itself what a broken
// connection means for each operation, and keep the QoS 2 receive state
// across reconnections exactly as the specification says a client does.
type conn struct {
	nc  net.Conn
	r   *packet.Reader
	wmu sync.Mutex
	buf []byte
}

// ioTimeout bounds every write and the CONNACK wait: a paused node must
// turn into a failed operation, never a hung client.
const ioTimeout = 3 * time.Second

// dial connects to addr and sends c (as MQTT 5). It returns the CONNACK
// only when it is a success; a refusal is an error naming its reason code.
func dial(ctx context.Context, addr string, c *packet.Connect) (*conn, *packet.Connack, error) {
	d := net.Dialer{Timeout: ioTimeout}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	cn := &conn{nc: nc, r: packet.NewReader(nc, 0)}
	c.ProtocolVersion = packet.V5
	if err := cn.send(c); err != nil {
		nc.Close()
		return nil, nil, err
	}
	nc.SetReadDeadline(time.Now().Add(ioTimeout))
	p, err := cn.r.ReadPacket(packet.V5)
	nc.SetReadDeadline(time.Time{})
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("CONNACK: %w", err)
	}
	ack, ok := p.(*packet.Connack)
	if !ok {
		nc.Close()
		return nil, nil, fmt.Errorf("CONNACK expected, got %v", p.Type())
	}
	if ack.ReasonCode >= 0x80 {
		nc.Close()
		return nil, ack, fmt.Errorf("CONNACK refused with reason 0x%02x", byte(ack.ReasonCode))
	}
	return cn, ack, nil
}

func (c *conn) send(p packet.Packet) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	var err error
	if c.buf, err = p.Encode(c.buf[:0], packet.V5); err != nil {
		return err
	}
	c.nc.SetWriteDeadline(time.Now().Add(ioTimeout))
	_, err = c.nc.Write(c.buf)
	return err
}

// read returns the next packet, or an error once d passes without one
// (d == 0: no deadline).
func (c *conn) read(d time.Duration) (packet.Packet, error) {
	if d > 0 {
		c.nc.SetReadDeadline(time.Now().Add(d))
	} else {
		c.nc.SetReadDeadline(time.Time{})
	}
	return c.r.ReadPacket(packet.V5)
}

func (c *conn) close() { c.nc.Close() }

// disconnect ends the connection normally: DISCONNECT 0x00, then close.
func (c *conn) disconnect() {
	c.send(&packet.Disconnect{})
	c.nc.Close()
}

// connectPacket is a CONNECT for id. expiry > 0 asks for a session that
// outlives the connection [MQTT-3.1.2-23].
func connectPacket(id string, clean bool, expiry uint32) *packet.Connect {
	c := &packet.Connect{ClientID: id, CleanStart: clean, KeepAlive: 60}
	if expiry > 0 {
		c.Properties.SessionExpiry = expiry
		c.Properties.Set(packet.PropSessionExpiry)
	}
	return c
}
