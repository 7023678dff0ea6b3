// Package rawclient is a deliberately dumb MQTT client for tests: it writes
// whatever bytes it is given and reads back whole packets as (type, flags,
// body) without interpreting them. It shares no code with Roost's packet
// codec, so tests built on it check the broker against the specification
// rather than against our own encoder.
//
// The encoders in build.go only frame bytes (lengths, variable byte
// integers); they never validate, so malformed packets are as easy to send
// as well-formed ones.
//
// It connects over every transport Roost serves (transport.go): TCP, TLS,
// WebSocket, WebSocket over TLS, and TCP with a PROXY protocol header
// first, and makes them behave alike where tests look: a read timeout
// leaves the connection usable, and the server's close reads as ErrClosed
// whichever way the transport ends a stream.
package rawclient

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// Control packet types, the high nibble of the first byte [MQTT-2.1.2].
const (
	CONNECT     byte = 1
	CONNACK     byte = 2
	PUBLISH     byte = 3
	PUBACK      byte = 4
	PUBREC      byte = 5
	PUBREL      byte = 6
	PUBCOMP     byte = 7
	SUBSCRIBE   byte = 8
	SUBACK      byte = 9
	UNSUBSCRIBE byte = 10
	UNSUBACK    byte = 11
	PINGREQ     byte = 12
	PINGRESP    byte = 13
	DISCONNECT  byte = 14
	AUTH        byte = 15
)

// TypeName returns the packet type's name, or "TYPE(n)" for unknown values.
func TypeName(t byte) string {
	names := [...]string{"RESERVED0", "CONNECT", "CONNACK", "PUBLISH", "PUBACK",
		"PUBREC", "PUBREL", "PUBCOMP", "SUBSCRIBE", "SUBACK", "UNSUBSCRIBE",
		"UNSUBACK", "PINGREQ", "PINGRESP", "DISCONNECT", "AUTH"}
	if int(t) < len(names) {
		return names[t]
	}
	return fmt.Sprintf("TYPE(%d)", t)
}

var (
	// ErrClosed means the peer closed the connection (EOF or reset).
	ErrClosed = errors.New("rawclient: connection closed by peer")
	// ErrTimeout means the deadline passed with the connection still open.
	ErrTimeout = errors.New("rawclient: timed out, connection still open")
	// ErrMalformed means the peer sent a fixed header we cannot frame
	// (a remaining length longer than four bytes).
	ErrMalformed = errors.New("rawclient: malformed fixed header")
)

// Packet is one control packet as read off the wire.
type Packet struct {
	Type  byte   // high nibble of the first byte
	Flags byte   // low nibble of the first byte
	Body  []byte // variable header and payload (the remaining length bytes)
}

// String renders the packet as "TYPE flags=f body=hex" for test failures.
func (p Packet) String() string {
	return fmt.Sprintf("%s flags=%x body=% x", TypeName(p.Type), p.Flags, p.Body)
}

// Conn is one connection to a broker, over any Transport.
type Conn struct {
	nc net.Conn
	r  *bufio.Reader
}

func newConn(nc net.Conn) *Conn { return &Conn{nc: nc, r: bufio.NewReader(nc)} }

// Dial connects to addr: a host:port for TCP, or a URL of any transport
// (see Dialer; mqtts:// and wss:// then trust the system roots only).
// ctx bounds only the dial.
func Dial(ctx context.Context, addr string) (*Conn, error) {
	return Dialer{}.Dial(ctx, addr)
}

// Close closes the connection abruptly (no DISCONNECT is sent).
func (c *Conn) Close() error { return c.nc.Close() }

// LocalAddr is the client side of the connection.
func (c *Conn) LocalAddr() net.Addr { return c.nc.LocalAddr() }

// Write sends b as is, within timeout. A peer that already closed the
// connection yields ErrClosed.
func (c *Conn) Write(b []byte, timeout time.Duration) error {
	if err := c.nc.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return classify(err)
	}
	_, err := c.nc.Write(b)
	return classify(err)
}

// ReadPacket reads one whole packet, waiting at most timeout. It returns
// ErrTimeout if nothing (or only part of a packet) arrived in time and
// ErrClosed if the peer closed the connection first.
func (c *Conn) ReadPacket(timeout time.Duration) (Packet, error) {
	if err := c.nc.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return Packet{}, classify(err)
	}
	first, err := c.r.ReadByte()
	if err != nil {
		return Packet{}, classify(err)
	}
	n, err := readVarInt(c.r)
	if err != nil {
		return Packet{}, classify(err)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		return Packet{}, classify(err)
	}
	return Packet{Type: first >> 4, Flags: first & 0x0F, Body: body}, nil
}

// ExpectClosed reads until the peer closes the connection and returns the
// packets that arrived before the close (a 5.0 DISCONNECT, say). It returns
// ErrTimeout, with the packets seen so far, if the connection is still open
// after timeout.
func (c *Conn) ExpectClosed(timeout time.Duration) ([]Packet, error) {
	deadline := time.Now().Add(timeout)
	var seen []Packet
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return seen, ErrTimeout
		}
		p, err := c.ReadPacket(left)
		if err != nil {
			if errors.Is(err, ErrClosed) {
				return seen, nil
			}
			return seen, err
		}
		seen = append(seen, p)
	}
}

func readVarInt(r io.ByteReader) (int, error) {
	v, mul := 0, 1
	for i := 0; i < 4; i++ {
		b, err := r.ReadByte()
		if err != nil {
			return 0, err
		}
		v += int(b&0x7F) * mul
		if b&0x80 == 0 {
			return v, nil
		}
		mul *= 128
	}
	return 0, ErrMalformed
}

// classify maps network errors onto ErrClosed and ErrTimeout, keeping the
// original in the chain. Every transport's end of stream is here: TLS and
// WebSocket conns from DialConn report it as io.EOF or net.ErrClosed too.
func classify(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("%w (%w)", ErrTimeout, err)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, net.ErrClosed):
		return fmt.Errorf("%w (%w)", ErrClosed, err)
	}
	return err
}
