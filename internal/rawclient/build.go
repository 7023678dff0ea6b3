package rawclient

import "encoding/binary"

// VarInt encodes v as a Variable Byte Integer [MQTT-1.5.5]. It does not
// check the 268,435,455 limit, so tests can send oversized values.
func VarInt(v int) []byte {
	var out []byte
	for {
		b := byte(v % 128)
		v /= 128
		if v > 0 {
			b |= 0x80
		}
		out = append(out, b)
		if v == 0 {
			return out
		}
	}
}

// U16 is a Two Byte Integer, big-endian [MQTT-1.5.2].
func U16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

// U32 is a Four Byte Integer, big-endian [MQTT-1.5.3].
func U32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// Str is a length-prefixed string or binary field [MQTT-1.5.4]; s is
// copied byte for byte, so invalid UTF-8 and U+0000 pass through.
func Str(s string) []byte { return append(U16(uint16(len(s))), s...) }

// Cat concatenates byte groups.
func Cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// Frame prefixes body with the first byte (type<<4 | flags) and the
// remaining length.
func Frame(first byte, body ...[]byte) []byte {
	b := Cat(body...)
	return Cat([]byte{first}, VarInt(len(b)), b)
}

// Props is an MQTT 5 property block: its length as a Variable Byte
// Integer followed by the encoded properties [MQTT-2.2.2].
func Props(p ...[]byte) []byte {
	b := Cat(p...)
	return Cat(VarInt(len(b)), b)
}

// MQTT 5 property identifiers used by the tests [MQTT-2.2.2.2].
const (
	PropPayloadFormat        byte = 0x01
	PropMessageExpiry        byte = 0x02
	PropContentType          byte = 0x03
	PropSubscriptionID       byte = 0x0B
	PropSessionExpiry        byte = 0x11
	PropAssignedClientID     byte = 0x12
	PropServerKeepAlive      byte = 0x13
	PropAuthMethod           byte = 0x15
	PropAuthData             byte = 0x16
	PropRequestProblemInfo   byte = 0x17
	PropWillDelay            byte = 0x18
	PropReasonString         byte = 0x1F
	PropReceiveMaximum       byte = 0x21
	PropTopicAliasMaximum    byte = 0x22
	PropTopicAlias           byte = 0x23
	PropMaximumQoS           byte = 0x24
	PropRetainAvailable      byte = 0x25
	PropUserProperty         byte = 0x26
	PropMaximumPacketSize    byte = 0x27
	PropWildcardSubAvailable byte = 0x28
	PropSubIDAvailable       byte = 0x29
	PropSharedSubAvailable   byte = 0x2A
	PropResponseTopic        byte = 0x08
	PropCorrelationData      byte = 0x09
	PropResponseInformation  byte = 0x1A
	PropServerReference      byte = 0x1C
	PropRequestResponseInfo  byte = 0x19
)

// PropU16 encodes a Two Byte Integer property.
func PropU16(id byte, v uint16) []byte { return Cat([]byte{id}, U16(v)) }

// PropU32 encodes a Four Byte Integer property.
func PropU32(id byte, v uint32) []byte { return Cat([]byte{id}, U32(v)) }

// PropVarInt encodes a Variable Byte Integer property.
func PropVarInt(id byte, v int) []byte { return Cat([]byte{id}, VarInt(v)) }

// PropStr encodes a UTF-8 string or binary property.
func PropStr(id byte, s string) []byte { return Cat([]byte{id}, Str(s)) }

// Will is the will part of a CONNECT.
type Will struct {
	Topic   string
	Payload string
	QoS     byte
	Retain  bool
	Props   []byte // 5.0 only: encoded will properties, without the length
}

// Connect describes a CONNECT packet [MQTT-3.1]. Only Version 4 (3.1.1)
// and 5 are framed with the "MQTT" protocol name.
type Connect struct {
	Version   byte // protocol level: 4 or 5
	ClientID  string
	Clean     bool   // Clean Session (3.1.1) / Clean Start (5.0)
	KeepAlive uint16 // seconds
	Props     []byte // 5.0 only: encoded properties, without the length
	Will      *Will
	Username  *string
	Password  *string
}

// Bytes encodes the CONNECT.
func (c Connect) Bytes() []byte {
	var flags byte
	if c.Clean {
		flags |= 0x02
	}
	if c.Will != nil {
		flags |= 0x04 | c.Will.QoS<<3
		if c.Will.Retain {
			flags |= 0x20
		}
	}
	if c.Password != nil {
		flags |= 0x40
	}
	if c.Username != nil {
		flags |= 0x80
	}
	vh := Cat(Str("MQTT"), []byte{c.Version, flags}, U16(c.KeepAlive))
	if c.Version == 5 {
		vh = Cat(vh, Props(c.Props))
	}
	pl := Str(c.ClientID)
	if w := c.Will; w != nil {
		if c.Version == 5 {
			pl = Cat(pl, Props(w.Props))
		}
		pl = Cat(pl, Str(w.Topic), Str(w.Payload))
	}
	if c.Username != nil {
		pl = Cat(pl, Str(*c.Username))
	}
	if c.Password != nil {
		pl = Cat(pl, Str(*c.Password))
	}
	return Frame(CONNECT<<4, vh, pl)
}

// Publish describes a PUBLISH packet [MQTT-3.3].
type Publish struct {
	Version byte
	QoS     byte
	Dup     bool
	Retain  bool
	Topic   string
	ID      uint16 // written only when QoS > 0
	Props   []byte // 5.0 only: encoded properties, without the length
	Payload []byte
}

// Bytes encodes the PUBLISH.
func (p Publish) Bytes() []byte {
	first := PUBLISH<<4 | p.QoS<<1
	if p.Dup {
		first |= 0x08
	}
	if p.Retain {
		first |= 0x01
	}
	vh := Str(p.Topic)
	if p.QoS > 0 {
		vh = Cat(vh, U16(p.ID))
	}
	if p.Version == 5 {
		vh = Cat(vh, Props(p.Props))
	}
	return Frame(first, vh, p.Payload)
}

// Sub is one topic filter and its options byte (3.1.1: the requested
// QoS; 5.0: QoS | NoLocal<<2 | RetainAsPublished<<3 | RetainHandling<<4).
type Sub struct {
	Filter string
	Opts   byte
}

// Subscribe encodes a SUBSCRIBE with the required flags 0b0010
// [MQTT-3.8.1-1]. props is ignored unless version is 5.
func Subscribe(version byte, id uint16, props []byte, subs ...Sub) []byte {
	vh := U16(id)
	if version == 5 {
		vh = Cat(vh, Props(props))
	}
	var pl []byte
	for _, s := range subs {
		pl = Cat(pl, Str(s.Filter), []byte{s.Opts})
	}
	return Frame(SUBSCRIBE<<4|0x02, vh, pl)
}

// Ack encodes PUBACK, PUBREC, PUBREL or PUBCOMP with just a packet
// identifier (reason code 0x00 implied in 5.0 [MQTT-3.4.2.1]); PUBREL gets
// its required flags 0b0010 [MQTT-3.6.1-1].
func Ack(typ byte, id uint16) []byte {
	first := typ << 4
	if typ == PUBREL {
		first |= 0x02
	}
	return Frame(first, U16(id))
}
