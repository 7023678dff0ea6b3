package packet

// Subscription Options bits [MQTT-3.8.3.1].
const (
	optQoS               = 0x03
	optNoLocal           = 0x04
	optRetainAsPublished = 0x08
	optRetainHandling    = 0x30
	optReserved          = 0xC0
)

// byte returns the options byte for version v; 3.1.x carries only QoS.
func (o SubOptions) byte(v Version) byte {
	b := byte(o.QoS) & optQoS
	if v == V5 {
		b |= boolBit(o.NoLocal, optNoLocal) | boolBit(o.RetainAsPublished, optRetainAsPublished)
		b |= (o.RetainHandling & 3) << 4
	}
	return b
}

// Encode implements Packet. The fixed header flags are 0b0010 [MQTT-3.8.1-1].
func (p *Subscribe) Encode(dst []byte, v Version) ([]byte, error) {
	if err := checkVersion(SUBSCRIBE, v); err != nil {
		return dst, err
	}
	s := sizer{n: 2}
	var props int
	if v == V5 {
		props = s.props(&p.Properties, placeOf(SUBSCRIBE, false))
	}
	for _, sub := range p.Subscriptions {
		s.str(sub.Filter)
		s.n++
	}
	b, err := header(dst, SUBSCRIBE, 0b0010, &s)
	if err != nil {
		return dst, err
	}
	b = appendU16(b, p.PacketID)
	if v == V5 {
		b = appendProps(b, &p.Properties, placeOf(SUBSCRIBE, false), props)
	}
	for _, sub := range p.Subscriptions {
		b = append(appendString(b, sub.Filter), sub.Options.byte(v))
	}
	return b, nil
}

// decodeSubscribe decodes a SUBSCRIBE. Filters are checked for UTF-8 only;
// their syntax ('#' placement, $share) is the topic package's job.
func decodeSubscribe(d *decoder, v Version) *Subscribe {
	p := &Subscribe{}
	p.PacketID = d.u16("packet identifier")
	if d.err == nil && p.PacketID == 0 {
		d.fail(protocolErr("MQTT-2.2.1-3", "SUBSCRIBE with packet identifier 0")) // [MQTT-2.2.1-3]
	}
	if v == V5 {
		d.props(&p.Properties, SUBSCRIBE, false)
	}
	if d.err == nil && d.left() == 0 {
		// 3.1.1 [MQTT-3.8.3-3]; a Protocol Error in 5.0 [MQTT-3.8.3-2].
		d.fail(noFilters(SUBSCRIBE, v, "MQTT-3.8.3-3"))
	}
	for d.err == nil && d.left() > 0 {
		f := d.str("topic filter")
		o := subOptions(d, d.u8("subscription options"), v)
		p.Subscriptions = append(p.Subscriptions, Subscription{Filter: f, Options: o})
	}
	return p
}

// noFilters is the error for a SUBSCRIBE or UNSUBSCRIBE without payload.
func noFilters(t Type, v Version, rule string) *Error {
	code := MalformedPacket
	if v == V5 {
		code = ProtocolError
	}
	return newError(code, rule, "%v without topic filters", t)
}

// subOptions checks and splits an options byte.
func subOptions(d *decoder, b byte, v Version) SubOptions {
	o := SubOptions{QoS: QoS(b & optQoS)}
	if d.err != nil {
		return o
	}
	if v != V5 {
		if b&^optQoS != 0 {
			// 3.1.1 [MQTT-3.8.3-4]: the upper six bits are reserved.
			d.fail(malformed("MQTT-3.8.3-4", "reserved bits set in requested QoS 0x%02X", b))
		}
	} else {
		o.NoLocal = b&optNoLocal != 0
		o.RetainAsPublished = b&optRetainAsPublished != 0
		o.RetainHandling = (b & optRetainHandling) >> 4
		switch {
		case b&optReserved != 0:
			d.fail(malformed("MQTT-3.8.3-5", "reserved bits set in subscription options 0x%02X", b)) // [MQTT-3.8.3-5]
		case o.RetainHandling == 3:
			d.fail(malformed("", "retain handling 3")) // section 3.8.3.1
		}
	}
	if o.QoS == 3 {
		d.fail(malformed("MQTT-3.8.3-4", "subscription QoS 3")) // 3.1.1 [MQTT-3.8.3-4]
	}
	return o
}
