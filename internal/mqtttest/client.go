// Package mqtttest is a raw MQTT client for tests: it sends packets built
// with the packet codec and reads the server's packets one at a time, so a
// test can check exactly what goes over the wire.
package mqtttest

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/eventually"
	"github.com/roost-mqtt/roost/packet"
)

// Client is one raw connection to a broker.
type Client struct {
	T  testing.TB
	NC net.Conn
	R  *packet.Reader
	V  packet.Version
}

// Dial connects to addr speaking protocol version v; the connection closes
// with the test.
func Dial(t testing.TB, addr string, v packet.Version) *Client {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &Client{T: t, NC: nc, R: packet.NewReader(nc, 1<<20), V: v}
}

// Send encodes and writes p, failing the test on error.
func (c *Client) Send(p packet.Packet) {
	c.T.Helper()
	b, err := p.Encode(nil, c.V)
	if err != nil {
		c.T.Fatal(err)
	}
	if _, err := c.NC.Write(b); err != nil {
		c.T.Fatalf("write %s: %v", p.Type(), err)
	}
}

// AckBound bounds the wait for an answer that must come (CONNACK,
// SUBACK) in Connect and Subscribe: only a failing test waits it out, and
// a shorter one failed tests on a busy 2-core machine, where the suite runs
// packages side by side.
const AckBound = 30 * time.Second

// Next reads one packet, failing the test when none comes. It waits at
// least AckBound, however short d is: the packet must come, so a longer
// wait costs only a failing test its time, and the tests' 1-s and 2-s
// bounds failed the suite on a loaded 2-core machine
// (TestFanOutSharedEncoding, a PUBREL 1 s late at load 30). A test that
// must see nothing uses Read or Collect.
func (c *Client) Next(d time.Duration) packet.Packet {
	c.T.Helper()
	p, err := c.Read(max(d, AckBound))
	if err != nil {
		c.T.Fatalf("reading packet: %v", err)
	}
	return p
}

// Read reads one packet within d.
func (c *Client) Read(d time.Duration) (packet.Packet, error) {
	c.NC.SetReadDeadline(time.Now().Add(d))
	return c.R.ReadPacket(c.V)
}

// Connect sends p (with the client's version) and expects a successful
// CONNACK, which it returns.
func (c *Client) Connect(p *packet.Connect) *packet.Connack {
	c.T.Helper()
	p.ProtocolVersion = c.V
	c.Send(p)
	ack, ok := c.Next(AckBound).(*packet.Connack)
	if !ok {
		c.T.Fatal("first packet is not CONNACK")
	}
	if ack.ReasonCode != 0 {
		c.T.Fatalf("CONNACK code 0x%02X", byte(ack.ReasonCode))
	}
	return ack
}

// Subscribe subscribes to one filter and expects it granted at qos.
func (c *Client) Subscribe(filter string, qos packet.QoS) {
	c.T.Helper()
	c.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: filter, Options: packet.SubOptions{QoS: qos}}}})
	if ack, ok := c.Next(AckBound).(*packet.Suback); !ok || ack.ReasonCodes[0] != packet.ReasonCode(qos) {
		c.T.Fatalf("SUBACK %+v for %s", ack, filter)
	}
}

// ExpectClosed waits up to d for the server to close the connection and
// returns the packets it sent before closing.
func (c *Client) ExpectClosed(d time.Duration) []packet.Packet {
	c.T.Helper()
	var got []packet.Packet
	deadline := time.Now().Add(d)
	for {
		p, err := c.Read(time.Until(deadline))
		if err == nil {
			got = append(got, p)
			continue
		}
		var oe *net.OpError
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &oe) && !oe.Timeout() {
			return got
		}
		c.T.Fatalf("connection not closed: %v (got %d packets)", err, len(got))
	}
}

// Collect reads packets for d and returns them.
func (c *Client) Collect(d time.Duration) []packet.Packet {
	var got []packet.Packet
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		p, err := c.Read(time.Until(deadline))
		if err != nil {
			break
		}
		got = append(got, p)
	}
	return got
}

// Eventually polls cond until it holds or d passes (eventually.True).
func Eventually(t testing.TB, d time.Duration, cond func() bool) {
	t.Helper()
	eventually.True(t, d, cond, "condition not met")
}
