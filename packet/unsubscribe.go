package packet

// Encode implements Packet. The fixed header flags are 0b0010 [MQTT-3.10.1-1].
func (p *Unsubscribe) Encode(dst []byte, v Version) ([]byte, error) {
	if err := checkVersion(UNSUBSCRIBE, v); err != nil {
		return dst, err
	}
	s := sizer{n: 2}
	var props int
	if v == V5 {
		props = s.props(&p.Properties, placeOf(UNSUBSCRIBE, false))
	}
	for _, f := range p.Filters {
		s.str(f)
	}
	b, err := header(dst, UNSUBSCRIBE, 0b0010, &s)
	if err != nil {
		return dst, err
	}
	b = appendU16(b, p.PacketID)
	if v == V5 {
		b = appendProps(b, &p.Properties, placeOf(UNSUBSCRIBE, false), props)
	}
	for _, f := range p.Filters {
		b = appendString(b, f)
	}
	return b, nil
}

func decodeUnsubscribe(d *decoder, v Version) *Unsubscribe {
	p := &Unsubscribe{}
	p.PacketID = d.u16("packet identifier")
	if d.err == nil && p.PacketID == 0 {
		d.fail(protocolErr("MQTT-2.2.1-3", "UNSUBSCRIBE with packet identifier 0")) // [MQTT-2.2.1-3]
	}
	if v == V5 {
		d.props(&p.Properties, UNSUBSCRIBE, false)
	}
	if d.err == nil && d.left() == 0 {
		d.fail(noFilters(UNSUBSCRIBE, v, "MQTT-3.10.3-2")) // [MQTT-3.10.3-2]
	}
	for d.err == nil && d.left() > 0 {
		p.Filters = append(p.Filters, d.str("topic filter"))
	}
	return p
}
