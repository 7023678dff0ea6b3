package packet

// Encode implements Packet. For 3.1.x, ReasonCode is written as the return
// code byte as it is; use ConnackCode311 to map a 5.0 code first.
func (p *Connack) Encode(dst []byte, v Version) ([]byte, error) {
	if err := checkVersion(CONNACK, v); err != nil {
		return dst, err
	}
	s := sizer{n: 2}
	var props int
	if v == V5 {
		props = s.props(&p.Properties, placeOf(CONNACK, false))
	}
	b, err := header(dst, CONNACK, 0, &s)
	if err != nil {
		return dst, err
	}
	b = append(b, boolBit(p.SessionPresent, 1), byte(p.ReasonCode))
	if v == V5 {
		b = appendProps(b, &p.Properties, placeOf(CONNACK, false), props)
	}
	return b, nil
}

func decodeConnack(d *decoder, v Version) *Connack {
	p := &Connack{}
	f := d.u8("acknowledge flags")
	p.ReasonCode = ReasonCode(d.u8("reason code"))
	if d.err == nil && f&^1 != 0 {
		d.fail(malformed("MQTT-3.2.2-1", "CONNACK reserved flags 0x%02X", f)) // [MQTT-3.2.2-1]
	}
	p.SessionPresent = f&1 != 0
	// A 5.0 CONNACK always has a property length; a 2-byte body from a
	// lenient peer is read as one without properties.
	if v == V5 && d.left() > 0 {
		d.props(&p.Properties, CONNACK, false)
	}
	return p
}

// ConnackCode311 maps a 5.0 CONNACK reason code to the nearest 3.1.1
// return code [MQTT-3.2.2.3]: Unsupported Protocol Version to 1, Client
// Identifier not valid to 2, Bad User Name or Password to 4, Not authorized
// to 5, Success to 0, and every other failure (Server unavailable, Server
// busy, ...) to 3, Server unavailable. Codes already in 0..5 are returned
// unchanged.
func ConnackCode311(rc ReasonCode) ReasonCode {
	switch rc {
	case Success:
		return Connack311Accepted
	case UnsupportedProtocolVersion:
		return Connack311BadProtocolVersion
	case ClientIdentifierNotValid:
		return Connack311IdentifierRejected
	case BadUserNameOrPassword:
		return Connack311BadUsernameOrPassword
	case NotAuthorized:
		return Connack311NotAuthorized
	}
	if rc <= Connack311NotAuthorized {
		return rc
	}
	return Connack311ServerUnavailable
}
