package packet

// Encode implements Packet. For 3.1.x every code >= 0x80 is written as
// 0x80, the only failure return code 3.1.1 has [MQTT-3.9.3].
func (p *Suback) Encode(dst []byte, v Version) ([]byte, error) {
	if err := checkVersion(SUBACK, v); err != nil {
		return dst, err
	}
	s := sizer{n: 2 + len(p.ReasonCodes)}
	var props int
	if v == V5 {
		props = s.props(&p.Properties, placeOf(SUBACK, false))
	}
	b, err := header(dst, SUBACK, 0, &s)
	if err != nil {
		return dst, err
	}
	b = appendU16(b, p.PacketID)
	if v == V5 {
		b = appendProps(b, &p.Properties, placeOf(SUBACK, false), props)
	}
	for _, rc := range p.ReasonCodes {
		if v != V5 && rc >= UnspecifiedError {
			rc = UnspecifiedError
		}
		b = append(b, byte(rc))
	}
	return b, nil
}

func decodeSuback(d *decoder, v Version) *Suback {
	p := &Suback{}
	p.PacketID = d.u16("packet identifier")
	if d.err == nil && p.PacketID == 0 {
		d.fail(protocolErr("MQTT-2.2.1-3", "SUBACK with packet identifier 0"))
	}
	if v == V5 {
		d.props(&p.Properties, SUBACK, false)
	}
	p.ReasonCodes = reasonCodes(d, SUBACK)
	if v != V5 {
		for _, rc := range p.ReasonCodes {
			if rc > GrantedQoS2 && rc != UnspecifiedError {
				// 3.1.1 has 0, 1, 2 and 0x80 only [MQTT-3.9.3-2].
				d.fail(malformed("MQTT-3.9.3-2", "SUBACK return code 0x%02X", byte(rc)))
				break
			}
		}
	}
	return p
}

// reasonCodes reads the rest of a SUBACK or UNSUBACK: one code per filter
// of the request, so at least one.
func reasonCodes(d *decoder, t Type) []ReasonCode {
	if d.err != nil {
		return nil
	}
	if d.left() == 0 {
		d.fail(protocolErr("", "%v without reason codes", t))
		return nil
	}
	rcs := make([]ReasonCode, d.left())
	for i := range rcs {
		rcs[i] = ReasonCode(d.u8("reason code"))
	}
	return rcs
}
