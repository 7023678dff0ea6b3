package packet

// PUBACK, PUBREC, PUBREL and PUBCOMP share one wire form [MQTT-3.4..3.7]:
// a packet identifier, then in 5.0 a reason code and properties, both left
// out when the code is Success and there are no properties, and the
// properties alone left out when empty [MQTT-3.4.2.1].

// Encode implements Packet.
func (p *Puback) Encode(dst []byte, v Version) ([]byte, error) {
	return encodeAck(dst, PUBACK, p.PacketID, p.ReasonCode, &p.Properties, v)
}

// Encode implements Packet.
func (p *Pubrec) Encode(dst []byte, v Version) ([]byte, error) {
	return encodeAck(dst, PUBREC, p.PacketID, p.ReasonCode, &p.Properties, v)
}

// Encode implements Packet. The fixed header flags are 0b0010 [MQTT-3.6.1-1].
func (p *Pubrel) Encode(dst []byte, v Version) ([]byte, error) {
	return encodeAck(dst, PUBREL, p.PacketID, p.ReasonCode, &p.Properties, v)
}

// Encode implements Packet.
func (p *Pubcomp) Encode(dst []byte, v Version) ([]byte, error) {
	return encodeAck(dst, PUBCOMP, p.PacketID, p.ReasonCode, &p.Properties, v)
}

func encodeAck(dst []byte, t Type, id uint16, rc ReasonCode, props *Properties, v Version) ([]byte, error) {
	if err := checkVersion(t, v); err != nil {
		return dst, err
	}
	s := sizer{n: 2}
	place := placeOf(t, false)
	n := props.size(place, &s)
	long := v == V5 && (rc != Success || n > 0) // reason code written
	if long {
		s.n++
		if n > 0 {
			s.n += varintLen(n) + n
		}
	}
	flags := byte(0)
	if t == PUBREL {
		flags = 0b0010
	}
	b, err := header(dst, t, flags, &s)
	if err != nil {
		return dst, err
	}
	b = appendU16(b, id)
	if long {
		b = append(b, byte(rc))
		if n > 0 {
			b = appendProps(b, props, place, n)
		}
	}
	return b, nil
}

// decodeAck decodes any of the four acknowledgements.
func decodeAck(t Type, d *decoder, v Version) Packet {
	var p Puback
	p.PacketID = d.u16("packet identifier")
	if d.err == nil && p.PacketID == 0 {
		d.fail(protocolErr("MQTT-2.2.1-3", "%v with packet identifier 0", t)) // [MQTT-2.2.1-3]
	}
	if v == V5 && d.left() > 0 {
		p.ReasonCode = ReasonCode(d.u8("reason code"))
		if d.left() > 0 {
			d.props(&p.Properties, t, false)
		}
	}
	switch t {
	case PUBREC:
		return (*Pubrec)(&p)
	case PUBREL:
		return (*Pubrel)(&p)
	case PUBCOMP:
		return (*Pubcomp)(&p)
	}
	return &p
}
