package crash

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// client is a minimal MQTT 5 client that, unlike internal/mqtttest, turns
// a broken connection into an error rather than a test failure: the
// broker is killed under it on purpose.
type client struct {
	nc  net.Conn
	r   *packet.Reader
	v   packet.Version
	wmu sync.Mutex
	buf []byte
}

// dial connects to addr, a URL of any transport, and sends c.
func dial(addr string, c *packet.Connect) (*client, *packet.Connack, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	// The conn's read deadlines work as on TCP on every transport
	// (rawclient.Dialer.DialConn): receive and waitClosed rely on that.
	nc, err := pki.Dialer().DialConn(ctx, addr)
	if err != nil {
		return nil, nil, err
	}
	cl := &client{nc: nc, r: packet.NewReader(nc, 0), v: packet.V5}
	c.ProtocolVersion = packet.V5
	if err := cl.send(c); err != nil {
		nc.Close()
		return nil, nil, err
	}
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	p, err := cl.r.ReadPacket(cl.v)
	nc.SetReadDeadline(time.Time{})
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	ack, ok := p.(*packet.Connack)
	if !ok || ack.ReasonCode != packet.Success {
		nc.Close()
		return nil, nil, fmt.Errorf("CONNECT %s: got %+v", c.ClientID, p)
	}
	return cl, ack, nil
}

func mustDial(t *testing.T, addr string, c *packet.Connect) (*client, *packet.Connack) {
	t.Helper()
	cl, ack, err := dial(addr, c)
	if err != nil {
		t.Fatal(err)
	}
	return cl, ack
}

func (c *client) send(p packet.Packet) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	var err error
	if c.buf, err = p.Encode(c.buf[:0], c.v); err != nil {
		return err
	}
	c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err = c.nc.Write(c.buf)
	return err
}

func (c *client) subscribe(t *testing.T, filter string, qos packet.QoS) {
	t.Helper()
	c.send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: filter, Options: packet.SubOptions{QoS: qos}}}})
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	p, err := c.r.ReadPacket(c.v)
	if s, ok := p.(*packet.Suback); err != nil || !ok || len(s.ReasonCodes) != 1 || s.ReasonCodes[0] != packet.ReasonCode(qos) {
		t.Fatalf("SUBSCRIBE %s: %+v, %v", filter, p, err)
	}
}

// waitClosed waits for the broker to close the connection.
func (c *client) waitClosed() {
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, err := c.r.ReadPacket(c.v); err != nil {
			c.nc.Close()
			return
		}
	}
}
