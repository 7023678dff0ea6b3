package packet

// Encode implements Packet. 3.1.x DISCONNECT has no body. In 5.0 the
// reason code and properties are left out when the code is Normal
// disconnection and there are no properties (the two-byte form), and the
// property length alone when there are none [MQTT-3.14.2.1].
func (p *Disconnect) Encode(dst []byte, v Version) ([]byte, error) {
	if err := checkVersion(DISCONNECT, v); err != nil {
		return dst, err
	}
	if v != V5 {
		return append(dst, byte(DISCONNECT)<<4, 0), nil
	}
	return encodeReasonProps(dst, DISCONNECT, p.ReasonCode, &p.Properties)
}

func decodeDisconnect(d *decoder, v Version) *Disconnect {
	p := &Disconnect{}
	if v == V5 {
		p.ReasonCode, p.Properties = decodeReasonProps(d, DISCONNECT)
	}
	return p
}

// encodeReasonProps encodes the 5.0 body shared by DISCONNECT and AUTH: an
// optional reason code and optional properties.
func encodeReasonProps(dst []byte, t Type, rc ReasonCode, props *Properties) ([]byte, error) {
	var s sizer
	place := placeOf(t, false)
	n := props.size(place, &s)
	if rc != Success || n > 0 {
		s.n++
		if n > 0 {
			s.n += varintLen(n) + n
		}
	}
	b, err := header(dst, t, 0, &s)
	if err != nil {
		return dst, err
	}
	if s.n > 0 {
		b = append(b, byte(rc))
		if n > 0 {
			b = appendProps(b, props, place, n)
		}
	}
	return b, nil
}

// decodeReasonProps is the decoding side of encodeReasonProps.
func decodeReasonProps(d *decoder, t Type) (ReasonCode, Properties) {
	var props Properties
	if d.left() == 0 {
		return Success, props
	}
	rc := ReasonCode(d.u8("reason code"))
	if d.left() > 0 {
		d.props(&props, t, false)
	}
	return rc, props
}
