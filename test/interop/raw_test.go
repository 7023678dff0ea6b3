package interop

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// The raw client speaks MQTT bytes directly, for what real clients hide:
// sending a duplicate QoS 2 PUBLISH, withholding acknowledgements, going
// silent past the keep alive, reading every subscription identifier of a
// PUBLISH. It is deliberately independent of the broker's own codec.

// Packet types [MQTT-2.1.2].
const (
	pktConnect    byte = 1
	pktConnack    byte = 2
	pktPublish    byte = 3
	pktPuback     byte = 4
	pktPubrec     byte = 5
	pktPubrel     byte = 6
	pktPubcomp    byte = 7
	pktSubscribe  byte = 8
	pktSuback     byte = 9
	pktPingreq    byte = 12
	pktPingresp   byte = 13
	pktDisconnect byte = 14
)

// rawPacket is a decoded packet from the server, flattened.
type rawPacket struct {
	Type           byte
	PacketID       uint16
	Topic          string
	Payload        string
	QoS            byte
	Dup, Retain    bool
	Code           byte // CONNACK return/reason code, first SUBACK code, ack or DISCONNECT reason
	SessionPresent bool
	SubIDs         []int
	Expiry         *uint32
	TopicAlias     uint16
}

// rawConnect is what the raw client puts in CONNECT.
type rawConnect struct {
	id            string
	clean         bool
	keepalive     uint16
	sessionExpiry uint32 // MQTT 5
	receiveMax    uint16 // MQTT 5, 0 for absent
	will          *will
}

// rawPublish is what the raw client puts in PUBLISH.
type rawPublish struct {
	id         uint16
	topic      string
	payload    string
	qos        byte
	dup        bool
	retain     bool
	topicAlias uint16 // MQTT 5, 0 for absent
}

type rawClient struct {
	name string
	p    proto
	conn net.Conn
	r    *bufio.Reader
}

// dialRaw opens a connection to b over the scenario's transport; it is
// closed when t ends.
func dialRaw(t *testing.T, b *testBroker, p proto, name string) *rawClient {
	t.Helper()
	conn, err := b.dial()
	if err != nil {
		t.Fatalf("raw %s: dial: %v", name, err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawClient{name: "raw " + p.name + " " + name, p: p, conn: conn, r: bufio.NewReader(conn)}
}

// connect sends CONNECT and returns the CONNACK, failing unless accepted.
func (c *rawClient) connect(t *testing.T, o rawConnect) rawPacket {
	t.Helper()
	var b []byte
	b = appendString(b, "MQTT")
	flags := byte(0)
	if o.clean {
		flags |= 0x02
	}
	if o.will != nil {
		flags |= 0x04 | o.will.qos<<3
		if o.will.retain {
			flags |= 0x20
		}
	}
	b = append(b, c.p.level, flags)
	b = binary.BigEndian.AppendUint16(b, o.keepalive)
	if c.p.level == 5 {
		var props []byte
		if o.sessionExpiry > 0 {
			props = binary.BigEndian.AppendUint32(append(props, 0x11), o.sessionExpiry)
		}
		if o.receiveMax > 0 {
			props = binary.BigEndian.AppendUint16(append(props, 0x21), o.receiveMax)
		}
		b = append(appendVarint(b, len(props)), props...)
	}
	b = appendString(b, o.id)
	if o.will != nil {
		if c.p.level == 5 {
			b = append(b, 0) // no will properties
		}
		b = appendString(appendString(b, o.will.topic), o.will.payload)
	}
	c.write(t, pktConnect<<4, b)
	ack := c.expect(t, 5*time.Second, pktConnack)
	if ack.Code != 0 {
		t.Fatalf("%s: CONNACK code %#x", c.name, ack.Code)
	}
	return ack
}

// subscribe subscribes to one filter and returns the SUBACK.
func (c *rawClient) subscribe(t *testing.T, id uint16, filter string, qos byte, subID int) rawPacket {
	t.Helper()
	b := binary.BigEndian.AppendUint16(nil, id)
	if c.p.level == 5 {
		var props []byte
		if subID > 0 {
			props = appendVarint(append(props, 0x0B), subID)
		}
		b = append(appendVarint(b, len(props)), props...)
	}
	b = append(appendString(b, filter), qos)
	c.write(t, pktSubscribe<<4|0x02, b)
	ack := c.expect(t, 5*time.Second, pktSuback)
	if ack.PacketID != id || ack.Code >= 0x80 {
		t.Fatalf("%s: SUBSCRIBE %s: got SUBACK id %d code %#x", c.name, filter, ack.PacketID, ack.Code)
	}
	return ack
}

// publish sends one PUBLISH exactly as described, DUP flag included.
func (c *rawClient) publish(t *testing.T, m rawPublish) {
	t.Helper()
	first := pktPublish<<4 | m.qos<<1
	if m.dup {
		first |= 0x08
	}
	if m.retain {
		first |= 0x01
	}
	b := appendString(nil, m.topic)
	if m.qos > 0 {
		b = binary.BigEndian.AppendUint16(b, m.id)
	}
	if c.p.level == 5 {
		var props []byte
		if m.topicAlias > 0 {
			props = binary.BigEndian.AppendUint16(append(props, 0x23), m.topicAlias)
		}
		b = append(appendVarint(b, len(props)), props...)
	}
	c.write(t, first, append(b, m.payload...))
}

// ack sends PUBACK, PUBREC, PUBREL or PUBCOMP for id (reason code Success,
// which MQTT 5 lets us omit [MQTT-3.4.2.1]).
func (c *rawClient) ack(t *testing.T, typ byte, id uint16) {
	t.Helper()
	first := typ << 4
	if typ == pktPubrel {
		first |= 0x02 // [MQTT-3.6.1-1]
	}
	c.write(t, first, binary.BigEndian.AppendUint16(nil, id))
}

// disconnect sends DISCONNECT (reason Normal) and closes the connection.
func (c *rawClient) disconnect(t *testing.T) {
	t.Helper()
	c.write(t, pktDisconnect<<4, nil)
	c.conn.Close()
}

func (c *rawClient) write(t *testing.T, first byte, body []byte) {
	t.Helper()
	b := append(appendVarint([]byte{first}, len(body)), body...)
	c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.conn.Write(b); err != nil {
		t.Fatalf("%s: write: %v", c.name, err)
	}
}

// read returns the next packet from the server, or an error (a timeout is
// a net.Error with Timeout() true; a closed connection is io.EOF or similar).
func (c *rawClient) read(d time.Duration) (rawPacket, error) {
	c.conn.SetReadDeadline(time.Now().Add(d))
	first, err := c.r.ReadByte()
	if err != nil {
		return rawPacket{}, err
	}
	n, err := readVarint(c.r)
	if err != nil {
		return rawPacket{}, err
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		return rawPacket{}, err
	}
	return decodeRaw(c.p, first, body)
}

// expect reads the next packet and fails unless it has type typ.
func (c *rawClient) expect(t *testing.T, d time.Duration, typ byte) rawPacket {
	t.Helper()
	pk, err := c.read(d)
	if err != nil {
		t.Fatalf("%s: waiting for packet type %d: %v", c.name, typ, err)
	}
	if pk.Type != typ {
		t.Fatalf("%s: got packet %+v, want type %d", c.name, pk, typ)
	}
	return pk
}

// isTimeout reports whether err is a read deadline expiring.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func decodeRaw(p proto, first byte, body []byte) (rawPacket, error) {
	d := &decoder{b: body}
	pk := rawPacket{Type: first >> 4}
	switch pk.Type {
	case pktConnack:
		pk.SessionPresent = d.byte()&1 == 1
		pk.Code = d.byte()
	case pktPublish:
		pk.QoS = first >> 1 & 3
		pk.Dup = first&0x08 != 0
		pk.Retain = first&0x01 != 0
		pk.Topic = d.string()
		if pk.QoS > 0 {
			pk.PacketID = d.uint16()
		}
		if p.level == 5 {
			d.properties(&pk)
		}
		pk.Payload = string(d.rest())
	case pktPuback, pktPubrec, pktPubrel, pktPubcomp:
		pk.PacketID = d.uint16()
		if len(d.b) > 0 {
			pk.Code = d.byte()
		}
	case pktSuback:
		pk.PacketID = d.uint16()
		if p.level == 5 {
			d.properties(&pk)
		}
		pk.Code = d.byte()
	case pktDisconnect:
		if len(d.b) > 0 {
			pk.Code = d.byte()
		}
	}
	if d.err != nil {
		return pk, fmt.Errorf("decoding packet type %d: %w", pk.Type, d.err)
	}
	return pk, nil
}

// decoder reads MQTT data types [MQTT-1.5]; the first error sticks.
type decoder struct {
	b   []byte
	err error
}

var errShort = errors.New("packet too short")

func (d *decoder) take(n int) []byte {
	if d.err != nil || len(d.b) < n {
		d.err = errShort
		return make([]byte, n)
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte     { return d.take(1)[0] }
func (d *decoder) uint16() uint16 { return binary.BigEndian.Uint16(d.take(2)) }
func (d *decoder) uint32() uint32 { return binary.BigEndian.Uint32(d.take(4)) }
func (d *decoder) string() string { return string(d.take(int(d.uint16()))) }
func (d *decoder) rest() []byte   { v := d.b; d.b = nil; return v }
func (d *decoder) varint() (n int) {
	for shift := 0; shift < 28; shift += 7 {
		c := d.byte()
		n |= int(c&0x7F) << shift
		if c&0x80 == 0 {
			return n
		}
	}
	d.err = errors.New("malformed variable byte integer")
	return n
}

// properties reads an MQTT 5 property list [MQTT-2.2.2], keeping the ones
// the scenarios look at. Subscription Identifier may repeat
// [MQTT-3.3.4-3], which is why paho.golang's single field is not enough.
func (d *decoder) properties(pk *rawPacket) {
	n := d.varint()
	if d.err != nil || n > len(d.b) {
		d.err = errShort
		return
	}
	pd := &decoder{b: d.take(n)}
	for len(pd.b) > 0 && pd.err == nil {
		switch id := pd.byte(); id {
		case 0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A:
			pd.byte()
		case 0x13, 0x21, 0x22:
			pd.uint16()
		case 0x23:
			pk.TopicAlias = pd.uint16()
		case 0x02:
			e := pd.uint32()
			pk.Expiry = &e
		case 0x11, 0x18, 0x27:
			pd.uint32()
		case 0x0B:
			pk.SubIDs = append(pk.SubIDs, pd.varint())
		case 0x03, 0x08, 0x12, 0x15, 0x1A, 0x1C, 0x1F, 0x09, 0x16:
			pd.string() // binary data has the same length prefix
		case 0x26:
			pd.string()
			pd.string()
		default:
			pd.err = fmt.Errorf("unknown property %#x", id)
		}
	}
	if pd.err != nil {
		d.err = pd.err
	}
}

func appendString(b []byte, s string) []byte {
	return append(binary.BigEndian.AppendUint16(b, uint16(len(s))), s...)
}

func appendVarint(b []byte, n int) []byte {
	for {
		c := byte(n & 0x7F)
		n >>= 7
		if n > 0 {
			c |= 0x80
		}
		b = append(b, c)
		if n == 0 {
			return b
		}
	}
}

func readVarint(r io.ByteReader) (int, error) {
	n := 0
	for shift := 0; shift < 28; shift += 7 {
		c, err := r.ReadByte()
		if err != nil {
			return 0, err
		}
		n |= int(c&0x7F) << shift
		if c&0x80 == 0 {
			return n, nil
		}
	}
	return 0, errors.New("malformed remaining length")
}

// receive reads PUBLISH packets and acknowledges them as a well-behaved
// client does (PUBACK; PUBREC, then PUBCOMP for the PUBREL), until n have
// arrived and then none for settle. It fails the test if n do not arrive
// within d.
func (c *rawClient) receive(t *testing.T, n int, d, settle time.Duration) []rawPacket {
	t.Helper()
	var got []rawPacket
	deadline := time.Now().Add(d)
	for {
		wait := time.Until(deadline)
		if len(got) >= n {
			wait = settle
		}
		if wait <= 0 {
			t.Fatalf("%s: got %d of %d PUBLISH packets within %v: %+v", c.name, len(got), n, d, got)
		}
		pk, err := c.read(wait)
		if isTimeout(err) && len(got) >= n {
			return got
		}
		if err != nil {
			t.Fatalf("%s: got %d of %d PUBLISH packets: %v (%+v)", c.name, len(got), n, err, got)
		}
		switch pk.Type {
		case pktPublish:
			got = append(got, pk)
			switch pk.QoS {
			case 1:
				c.ack(t, pktPuback, pk.PacketID)
			case 2:
				c.ack(t, pktPubrec, pk.PacketID)
			}
		case pktPubrel:
			c.ack(t, pktPubcomp, pk.PacketID)
		}
	}
}
