package packet

// Encode implements Packet. 3.1.x UNSUBACK carries the packet identifier
// only; properties and reason codes are written for 5.0.
func (p *Unsuback) Encode(dst []byte, v Version) ([]byte, error) {
	if err := checkVersion(UNSUBACK, v); err != nil {
		return dst, err
	}
	s := sizer{n: 2}
	var props int
	if v == V5 {
		props = s.props(&p.Properties, placeOf(UNSUBACK, false))
		s.n += len(p.ReasonCodes)
	}
	b, err := header(dst, UNSUBACK, 0, &s)
	if err != nil {
		return dst, err
	}
	b = appendU16(b, p.PacketID)
	if v == V5 {
		b = appendProps(b, &p.Properties, placeOf(UNSUBACK, false), props)
		for _, rc := range p.ReasonCodes {
			b = append(b, byte(rc))
		}
	}
	return b, nil
}

func decodeUnsuback(d *decoder, v Version) *Unsuback {
	p := &Unsuback{}
	p.PacketID = d.u16("packet identifier")
	if d.err == nil && p.PacketID == 0 {
		d.fail(protocolErr("MQTT-2.2.1-3", "UNSUBACK with packet identifier 0"))
	}
	if v == V5 {
		d.props(&p.Properties, UNSUBACK, false)
		p.ReasonCodes = reasonCodes(d, UNSUBACK)
	}
	return p
}
