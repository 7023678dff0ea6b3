package load

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// setupTimeout bounds each step of setting a connection up (dial, CONNECT
// to CONNACK, SUBSCRIBE to SUBACK), so a broker that stops answering ends
// the run instead of hanging it.
const setupTimeout = 10 * time.Second

// errProtocol is a broker answer the load generator cannot continue from.
var errProtocol = errors.New("load: unexpected packet from broker")

// mconn is one MQTT connection. Its read buffer holds unparsed bytes in
// buf[r:w]; next parses packets out of it in place.
type mconn struct {
	nc  net.Conn
	v   packet.Version
	buf []byte
	r   int
	w   int
	// need is the total size of the packet at buf[r:] when it is
	// incomplete, so fill makes room for all of it.
	need int
}

func newConn(nc net.Conn, v packet.Version, bufSize int) *mconn {
	return &mconn{nc: nc, v: v, buf: make([]byte, bufSize)}
}

// next returns the next complete packet in the buffer; ok is false when
// more bytes are needed. body aliases the read buffer and is valid until
// the next fill.
func (c *mconn) next() (h packet.FixedHeader, body []byte, ok bool, err error) {
	b := c.buf[c.r:c.w]
	h, err = packet.ParseFixedHeader(b)
	if errors.Is(err, packet.ErrIncomplete) {
		c.need = 5
		return h, nil, false, nil
	}
	if err != nil {
		return h, nil, false, err
	}
	end := h.HeaderLen + h.Remaining
	if end > len(b) {
		c.need = end
		return h, nil, false, nil
	}
	c.r += end
	c.need = 0
	return h, b[h.HeaderLen:end], true, nil
}

// fill reads once, at most limit bytes when limit > 0. It first moves the
// unparsed bytes to the front when the free tail gets short, and grows the
// buffer for a packet larger than it.
func (c *mconn) fill(limit int) error {
	if c.r == c.w {
		c.r, c.w = 0, 0
	} else if c.r > 0 && (len(c.buf)-c.w < len(c.buf)/4 || len(c.buf)-c.r < c.need) {
		c.w = copy(c.buf, c.buf[c.r:c.w])
		c.r = 0
	}
	if c.need > len(c.buf)-c.r {
		nb := make([]byte, 2*c.need)
		c.w = copy(nb, c.buf[c.r:c.w])
		c.r, c.buf = 0, nb
	}
	room := c.buf[c.w:]
	if limit > 0 && limit < len(room) {
		room = room[:limit]
	}
	n, err := c.nc.Read(room)
	c.w += n
	if n > 0 {
		return nil // deliver what came even if the read also failed
	}
	return err
}

// readPacket reads and decodes one packet (setup only: it allocates).
func (c *mconn) readPacket(deadline time.Time) (packet.Packet, error) {
	c.nc.SetReadDeadline(deadline)
	defer c.nc.SetReadDeadline(time.Time{})
	for {
		h, body, ok, err := c.next()
		if err != nil {
			return nil, err
		}
		if ok {
			return packet.Decode(h, body, c.v)
		}
		if err := c.fill(0); err != nil {
			return nil, err
		}
	}
}

func (c *mconn) send(p packet.Packet) error {
	b, err := p.Encode(nil, c.v)
	if err != nil {
		return err
	}
	_, err = c.nc.Write(b)
	return err
}

// connectOpts are the CONNECT fields the scenarios vary.
type connectOpts struct {
	clientID  string
	keepAlive uint16
	// receiveMax is the MQTT 5 Receive Maximum for subscribers of QoS 1/2
	// messages, so the broker's window towards them is its own limit.
	receiveMax uint16
	// persistent keeps the session (Config.Persistent).
	persistent bool
}

// handshake sends CONNECT and waits for a successful CONNACK; it reports
// the CONNACK's Session Present flag.
func (c *mconn) handshake(ctx context.Context, o connectOpts) (sessionPresent bool, err error) {
	p := &packet.Connect{ClientID: o.clientID, CleanStart: !o.persistent, KeepAlive: o.keepAlive}
	if c.v == packet.V5 && o.receiveMax > 0 {
		p.Properties.ReceiveMaximum = o.receiveMax
		p.Properties.Set(packet.PropReceiveMaximum)
	}
	if c.v == packet.V5 && o.persistent {
		// 0xFFFFFFFF: the session never expires (MQTT 5.0 3.1.2.11.2),
		// as a 3.1.1 Clean Session 0 session.
		p.Properties.SessionExpiry = 0xFFFFFFFF
		p.Properties.Set(packet.PropSessionExpiry)
	}
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(time.Now()) })
	defer stop()
	c.nc.SetWriteDeadline(time.Now().Add(setupTimeout))
	if err := c.send(p); err != nil {
		return false, fmt.Errorf("CONNECT: %w", err)
	}
	c.nc.SetWriteDeadline(time.Time{})
	ack, err := c.readPacket(time.Now().Add(setupTimeout))
	if err != nil {
		return false, fmt.Errorf("waiting for CONNACK: %w", err)
	}
	ca, ok := ack.(*packet.Connack)
	if !ok {
		return false, fmt.Errorf("%w: %v instead of CONNACK", errProtocol, ack.Type())
	}
	if ca.ReasonCode != 0 {
		return false, fmt.Errorf("connection refused: CONNACK code 0x%02X (%v)", byte(ca.ReasonCode), ca.ReasonCode)
	}
	return ca.SessionPresent, nil
}

// subscribe subscribes to filter at qos and waits for the SUBACK.
func (c *mconn) subscribe(ctx context.Context, filter string, qos packet.QoS) error {
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(time.Now()) })
	defer stop()
	sub := &packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: filter, Options: packet.SubOptions{QoS: qos}}}}
	c.nc.SetWriteDeadline(time.Now().Add(setupTimeout))
	if err := c.send(sub); err != nil {
		return fmt.Errorf("SUBSCRIBE: %w", err)
	}
	c.nc.SetWriteDeadline(time.Time{})
	deadline := time.Now().Add(setupTimeout)
	for {
		p, err := c.readPacket(deadline)
		if err != nil {
			return fmt.Errorf("waiting for SUBACK: %w", err)
		}
		switch p := p.(type) {
		case *packet.Suback:
			if len(p.ReasonCodes) != 1 || p.ReasonCodes[0] >= 0x80 {
				return fmt.Errorf("subscription to %q refused: SUBACK %v", filter, p.ReasonCodes)
			}
			return nil
		case *packet.Publish:
			// A retained or $SYS message may come first; ignore it.
		default:
			return fmt.Errorf("%w: %v instead of SUBACK", errProtocol, p.Type())
		}
	}
}

// disconnect sends DISCONNECT (best effort, bounded) and closes.
func (c *mconn) disconnect() {
	c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	c.nc.Write([]byte{byte(packet.DISCONNECT) << 4, 0})
	c.nc.Close()
}

// publishView locates the packet identifier and payload of a PUBLISH body
// in place. ok is false for a body too short for its own fields.
func publishView(flags byte, body []byte, v packet.Version) (id uint16, payload []byte, ok bool) {
	if len(body) < 2 {
		return 0, nil, false
	}
	i := 2 + int(binary.BigEndian.Uint16(body))
	if flags&0x06 != 0 { // QoS 1 or 2 [MQTT-3.3.2.2]
		if len(body) < i+2 {
			return 0, nil, false
		}
		id = binary.BigEndian.Uint16(body[i:])
		i += 2
	}
	if v == packet.V5 {
		n, size := uvarint(body[min(i, len(body)):])
		if size == 0 {
			return 0, nil, false
		}
		i += size + n
	}
	if i > len(body) {
		return 0, nil, false
	}
	return id, body[i:], true
}

// uvarint decodes an MQTT variable byte integer [MQTT-1.5.5]; size 0 means
// b is too short or the integer too long.
func uvarint(b []byte) (n, size int) {
	for i := 0; i < 4 && i < len(b); i++ {
		n |= int(b[i]&0x7F) << (7 * i)
		if b[i]&0x80 == 0 {
			return n, i + 1
		}
	}
	return 0, 0
}

// ackID reads the packet identifier of a PUBACK/PUBREC/PUBREL/PUBCOMP and,
// in MQTT 5, whether its reason code is a failure (>= 0x80).
func ackID(body []byte) (id uint16, failed bool, ok bool) {
	if len(body) < 2 {
		return 0, false, false
	}
	return binary.BigEndian.Uint16(body), len(body) > 2 && body[2] >= 0x80, true
}

// appendAck appends a two-byte-body acknowledgement of type t for id; PUBREL
// carries the flags 0b0010 [MQTT-3.6.1-1]. In MQTT 5 leaving out the reason
// code means Success [MQTT-3.4.2.1].
func appendAck(b []byte, t packet.Type, id uint16) []byte {
	first := byte(t) << 4
	if t == packet.PUBREL {
		first |= 0b0010
	}
	return append(b, first, 2, byte(id>>8), byte(id))
}
