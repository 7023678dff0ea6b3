package packet

import (
	"errors"
	"io"
)

// ParseFixedHeader parses the fixed header at the start of b [MQTT-2.1.1].
// It returns ErrIncomplete when b ends inside the header, and a *Error with
// MalformedPacket for a packet type of 0 or a remaining length longer than
// four bytes [MQTT-1.5.5-1]. The flags are checked later, by Decode.
func ParseFixedHeader(b []byte) (FixedHeader, error) {
	if len(b) < 2 {
		return FixedHeader{}, ErrIncomplete
	}
	n, size, err := parseVarint(b[1:])
	if err != nil {
		return FixedHeader{}, err
	}
	if size == 0 {
		return FixedHeader{}, ErrIncomplete
	}
	return newFixedHeader(b[0], n, 1+size)
}

// ReadFixedHeader reads a fixed header from r one byte at a time. It returns
// io.EOF if r ends before the first byte, io.ErrUnexpectedEOF if it ends
// inside the header, and the errors of ParseFixedHeader.
func ReadFixedHeader(r io.ByteReader) (FixedHeader, error) {
	first, err := r.ReadByte()
	if err != nil {
		return FixedHeader{}, err
	}
	n, shift := 0, 0
	for i := 1; ; i++ {
		if i == 5 {
			return FixedHeader{}, malformed("MQTT-1.5.5-1", "variable byte integer longer than 4 bytes")
		}
		c, err := r.ReadByte()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return FixedHeader{}, err
		}
		n |= int(c&0x7F) << shift
		shift += 7
		if c&0x80 == 0 {
			return newFixedHeader(first, n, 1+i)
		}
	}
}

func newFixedHeader(first byte, remaining, headerLen int) (FixedHeader, error) {
	h := FixedHeader{Type: Type(first >> 4), Flags: first & 0x0F, Remaining: remaining, HeaderLen: headerLen}
	if h.Type == 0 {
		return h, malformed("MQTT-2.1.2", "reserved packet type 0")
	}
	return h, nil
}

// Decode decodes the body of the packet whose fixed header is h; body must
// be exactly h.Remaining bytes. v is the protocol version negotiated on the
// connection; it is ignored for CONNECT, which carries its own.
//
// Strings and byte slices of the result are copies: the caller may reuse
// body at once. All of them share one allocation per packet.
//
// A violation of the wire rules is returned as a *Error carrying the reason
// code to answer with. For CONNECT, once the protocol level has been read,
// the partly decoded *Connect (ProtocolVersion set) is returned along with
// the error, so a server can answer with a CONNACK of the right version.
func Decode(h FixedHeader, body []byte, v Version) (Packet, error) {
	if len(body) != h.Remaining {
		return nil, malformed("", "%v: body is %d bytes, remaining length says %d", h.Type, len(body), h.Remaining)
	}
	if h.Type == CONNECT {
		c := new(Connect)
		known, err := decodeConnect(body, c)
		if !known {
			return nil, err
		}
		// The flags rule depends on the protocol level CONNECT names.
		if ferr := checkFlags(h, c.ProtocolVersion); ferr != nil && err == nil {
			return nil, ferr
		}
		return c, err
	}
	if v != V31 && v != V311 && v != V5 {
		return nil, protocolErr("", "unknown protocol version %d", byte(v))
	}
	if err := checkFlags(h, v); err != nil {
		return nil, err
	}
	d := &decoder{b: body}
	p := decodeBody(h, d, v)
	if err := d.end(h.Type); err != nil {
		return nil, err
	}
	return p, nil
}

// DecodeConnect is Decode for a CONNECT into p, which it overwrites: a
// server decodes one CONNECT per connection, and a connection storm would
// otherwise leave a 700-byte Connect (two property sets) of garbage per
// client. The strings and byte slices it fills in are freshly allocated
// (one allocation per packet, as Decode's), never shared with an earlier
// packet. The error is what Decode returns for the same bytes, and p holds
// what Decode's partly decoded *Connect would (so a server can answer with
// a CONNACK of the right version), or is zero (ProtocolVersion 0) where
// Decode returns no Connect.
func DecodeConnect(h FixedHeader, body []byte, p *Connect) error {
	if h.Type != CONNECT {
		*p = Connect{}
		return protocolErr("", "DecodeConnect given a %v", h.Type)
	}
	if len(body) != h.Remaining {
		*p = Connect{}
		return malformed("", "%v: body is %d bytes, remaining length says %d", h.Type, len(body), h.Remaining)
	}
	known, err := decodeConnect(body, p)
	if !known {
		return err
	}
	// The flags rule depends on the protocol level CONNECT names.
	if ferr := checkFlags(h, p.ProtocolVersion); ferr != nil && err == nil {
		*p = Connect{} // as Decode, which returns no Connect for it
		return ferr
	}
	return err
}

// DecodePublish is Decode for a PUBLISH into p, which it overwrites: a
// reader that handles one PUBLISH at a time reuses one Publish (and its
// 400-odd bytes of properties) instead of allocating one per packet. The
// topic, payload and properties it fills in are freshly allocated, never
// shared with an earlier packet, so keeping them is as safe as keeping
// what Decode returns. On error p holds nothing useful.
func DecodePublish(h FixedHeader, body []byte, v Version, p *Publish) error {
	return decodePublishBody(h, body, v, p, nil)
}

// PublishOptions say how DecodePublishWith hands out a PUBLISH's topic and
// payload; its properties are copies in any case, as DecodePublish's.
type PublishOptions struct {
	// Topics, when not nil, is the connection's cache of topic names: a
	// name it holds costs no allocation (see TopicCache). Without it the
	// topic is still a string of its own, never a view into the payload's
	// memory.
	Topics *TopicCache
	// BorrowPayload makes p.Payload a view into body instead of a copy:
	// it is valid only until the caller reuses body, and the caller must
	// copy it before anything keeps it longer. Without it the payload is
	// a copy of its own (or shares the properties' copy).
	BorrowPayload bool
}

// DecodePublishWith is DecodePublish with the topic and payload handed out
// as o says. The errors are DecodePublish's for the same bytes.
func DecodePublishWith(h FixedHeader, body []byte, v Version, p *Publish, o PublishOptions) error {
	return decodePublishBody(h, body, v, p, &o)
}

func decodePublishBody(h FixedHeader, body []byte, v Version, p *Publish, o *PublishOptions) error {
	if h.Type != PUBLISH {
		return protocolErr("", "DecodePublish given a %v", h.Type)
	}
	if len(body) != h.Remaining {
		return malformed("", "%v: body is %d bytes, remaining length says %d", h.Type, len(body), h.Remaining)
	}
	if v != V31 && v != V311 && v != V5 {
		return protocolErr("", "unknown protocol version %d", byte(v))
	}
	d := decoder{b: body}
	decodePublishInto(h, &d, v, p, o)
	return d.end(PUBLISH)
}

// decodeBody dispatches on the packet type. AUTH exists only in 5.0.
func decodeBody(h FixedHeader, d *decoder, v Version) Packet {
	switch h.Type {
	case CONNACK:
		return decodeConnack(d, v)
	case PUBLISH:
		return decodePublish(h, d, v)
	case PUBACK, PUBREC, PUBREL, PUBCOMP:
		return decodeAck(h.Type, d, v)
	case SUBSCRIBE:
		return decodeSubscribe(d, v)
	case SUBACK:
		return decodeSuback(d, v)
	case UNSUBSCRIBE:
		return decodeUnsubscribe(d, v)
	case UNSUBACK:
		return decodeUnsuback(d, v)
	case PINGREQ:
		return &Pingreq{}
	case PINGRESP:
		return &Pingresp{}
	case DISCONNECT:
		return decodeDisconnect(d, v)
	case AUTH:
		if v == V5 {
			return decodeAuth(d)
		}
	}
	d.fail(malformed("MQTT-2.1.2", "packet type %d not defined in MQTT %v", byte(h.Type), v))
	return nil
}

// checkFlags enforces the reserved fixed-header flags of protocol version
// v [MQTT-2.1.3-1]: PUBREL, SUBSCRIBE and UNSUBSCRIBE carry 0b0010, PUBLISH
// carries DUP, QoS and RETAIN (checked by decodePublish), every other
// packet 0. MQTT 3.1 has no such rule: there PUBREL, SUBSCRIBE and
// UNSUBSCRIBE carry QoS 1 and a DUP flag that a client sets when it resends
// one, and the other packets' flags are "not used", so none is rejected.
func checkFlags(h FixedHeader, v Version) error {
	want := byte(0)
	switch {
	case h.Type == PUBLISH, v == V31:
		return nil
	case h.Type == PUBREL, h.Type == SUBSCRIBE, h.Type == UNSUBSCRIBE:
		want = 0b0010
	}
	if h.Flags != want {
		return malformed("MQTT-2.1.3-1", "%v: reserved flags 0x%X, want 0x%X", h.Type, h.Flags, want) // [MQTT-2.1.3-1]
	}
	return nil
}
