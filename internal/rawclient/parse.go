package rawclient

import (
	"encoding/binary"
	"errors"
	"fmt"
)

var errShort = errors.New("rawclient: packet body too short")

// Prop is one decoded MQTT 5 property. Integer properties set Int; string
// and binary properties set Str; a User Property sets Key and Str.
type Prop struct {
	ID  byte
	Int uint32
	Key string
	Str string
}

// Properties is a decoded property block in wire order.
type Properties []Prop

// Get returns the first property with the given identifier.
func (ps Properties) Get(id byte) (Prop, bool) {
	for _, p := range ps {
		if p.ID == id {
			return p, true
		}
	}
	return Prop{}, false
}

// All returns every property with the given identifier (Subscription
// Identifier and User Property may repeat).
func (ps Properties) All(id byte) []Prop {
	var out []Prop
	for _, p := range ps {
		if p.ID == id {
			out = append(out, p)
		}
	}
	return out
}

// reader walks a packet body.
type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil || len(r.b) < n {
		r.err = errShort
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) u8() byte {
	if b := r.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if b := r.take(2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if b := r.take(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (r *reader) str() string { return string(r.take(int(r.u16()))) }

func (r *reader) varint() int {
	v, mul := 0, 1
	for i := 0; i < 4; i++ {
		b := r.u8()
		v += int(b&0x7F) * mul
		if b&0x80 == 0 {
			return v
		}
		mul *= 128
	}
	r.err = ErrMalformed
	return 0
}

func (r *reader) props() Properties {
	n := r.varint()
	sub := &reader{b: r.take(n)}
	if r.err != nil {
		return nil
	}
	var ps Properties
	for len(sub.b) > 0 && sub.err == nil {
		p := Prop{ID: sub.u8()}
		switch p.ID {
		case PropPayloadFormat, PropRequestProblemInfo, PropRequestResponseInfo,
			PropMaximumQoS, PropRetainAvailable, PropWildcardSubAvailable,
			PropSubIDAvailable, PropSharedSubAvailable:
			p.Int = uint32(sub.u8())
		case PropServerKeepAlive, PropReceiveMaximum, PropTopicAliasMaximum, PropTopicAlias:
			p.Int = uint32(sub.u16())
		case PropMessageExpiry, PropSessionExpiry, PropWillDelay, PropMaximumPacketSize:
			p.Int = sub.u32()
		case PropSubscriptionID:
			p.Int = uint32(sub.varint())
		case PropContentType, PropResponseTopic, PropCorrelationData, PropAssignedClientID,
			PropAuthMethod, PropAuthData, PropResponseInformation, PropServerReference,
			PropReasonString:
			p.Str = sub.str()
		case PropUserProperty:
			p.Key, p.Str = sub.str(), sub.str()
		default:
			r.err = fmt.Errorf("rawclient: unknown property 0x%02x", p.ID)
			return ps
		}
		ps = append(ps, p)
	}
	if sub.err != nil {
		r.err = sub.err
	}
	return ps
}

// Connack is a decoded CONNACK [MQTT-3.2].
type Connack struct {
	SessionPresent bool
	Code           byte // 3.1.1 return code or 5.0 reason code
	Props          Properties
}

// ParseConnack decodes a CONNACK body for the given protocol version.
func ParseConnack(version byte, body []byte) (Connack, error) {
	r := &reader{b: body}
	c := Connack{SessionPresent: r.u8()&0x01 == 1, Code: r.u8()}
	if version == 5 && len(r.b) > 0 {
		c.Props = r.props()
	}
	return c, r.err
}

// Message is a decoded PUBLISH [MQTT-3.3].
type Message struct {
	Dup     bool
	QoS     byte
	Retain  bool
	Topic   string
	ID      uint16
	Props   Properties
	Payload []byte
}

// ParsePublish decodes a PUBLISH given its fixed-header flags and body.
func ParsePublish(version byte, flags byte, body []byte) (Message, error) {
	m := Message{Dup: flags&0x08 != 0, QoS: flags >> 1 & 0x03, Retain: flags&0x01 != 0}
	r := &reader{b: body}
	m.Topic = r.str()
	if m.QoS > 0 {
		m.ID = r.u16()
	}
	if version == 5 {
		m.Props = r.props()
	}
	m.Payload = r.b
	return m, r.err
}

// Suback is a decoded SUBACK [MQTT-3.9].
type Suback struct {
	ID    uint16
	Props Properties
	Codes []byte
}

// ParseSuback decodes a SUBACK body.
func ParseSuback(version byte, body []byte) (Suback, error) {
	r := &reader{b: body}
	s := Suback{ID: r.u16()}
	if version == 5 {
		s.Props = r.props()
	}
	s.Codes = r.b
	return s, r.err
}

// AckPacket is a decoded PUBACK, PUBREC, PUBREL or PUBCOMP.
type AckPacket struct {
	ID    uint16
	Code  byte // 0x00 when omitted [MQTT-3.4.2.1]
	Props Properties
}

// ParseAck decodes the body of a publish acknowledgement.
func ParseAck(version byte, body []byte) (AckPacket, error) {
	r := &reader{b: body}
	a := AckPacket{ID: r.u16()}
	if version == 5 && len(r.b) > 0 {
		a.Code = r.u8()
		if len(r.b) > 0 {
			a.Props = r.props()
		}
	}
	return a, r.err
}

// Disconnect is a decoded 5.0 DISCONNECT [MQTT-3.14].
type Disconnect struct {
	Code  byte // 0x00 when the body is empty [MQTT-3.14.2.1]
	Props Properties
}

// ParseDisconnect decodes a DISCONNECT body.
func ParseDisconnect(body []byte) (Disconnect, error) {
	r := &reader{b: body}
	var d Disconnect
	if len(r.b) > 0 {
		d.Code = r.u8()
	}
	if len(r.b) > 0 {
		d.Props = r.props()
	}
	return d, r.err
}
