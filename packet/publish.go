package packet

// PUBLISH fixed-header flags [MQTT-3.3.1].
const (
	pubRetain = 0x01
	pubQoS    = 0x06
	pubDup    = 0x08
)

// Encode implements Packet. It does not allocate when dst has room for the
// packet. The fields are written as they are; the decoder's checks (QoS 3,
// wildcards, ...) are not repeated here.
func (p *Publish) Encode(dst []byte, v Version) ([]byte, error) {
	if err := checkVersion(PUBLISH, v); err != nil {
		return dst, err
	}
	var s sizer
	s.str(p.Topic)
	if p.QoS > 0 {
		s.n += 2
	}
	var props int
	if v == V5 {
		props = s.props(&p.Properties, placeOf(PUBLISH, false))
	}
	s.n += len(p.Payload)
	flags := boolBit(p.Dup, pubDup) | byte(p.QoS&3)<<1 | boolBit(p.Retain, pubRetain)
	b, err := header(dst, PUBLISH, flags, &s)
	if err != nil {
		return dst, err
	}
	b = appendString(b, p.Topic)
	if p.QoS > 0 {
		b = appendU16(b, p.PacketID)
	}
	if v == V5 {
		b = appendProps(b, &p.Properties, placeOf(PUBLISH, false), props)
	}
	return append(b, p.Payload...), nil
}

func decodePublish(h FixedHeader, d *decoder, v Version) *Publish {
	p := new(Publish)
	if !decodePublishInto(h, d, v, p, nil) {
		return nil
	}
	return p
}

// decodePublishInto overwrites p with the PUBLISH in d; false when the
// packet is unusable (d holds the error). With o nil, the topic and payload
// are views into the packet's one copy, as every decoded field; see
// PublishOptions for the others.
func decodePublishInto(h FixedHeader, d *decoder, v Version, p *Publish, o *PublishOptions) bool {
	*p = Publish{
		Dup:    h.Flags&pubDup != 0,
		QoS:    QoS(h.Flags&pubQoS) >> 1,
		Retain: h.Flags&pubRetain != 0,
	}
	switch {
	case p.QoS == 3:
		d.fail(malformed("MQTT-3.3.1-4", "PUBLISH with QoS 3")) // [MQTT-3.3.1-4]
		return false
	case p.Dup && p.QoS == 0 && v != V31:
		// 3.1.1 and 5.0: MQTT 3.1 defines DUP for QoS > 0 only but does not
		// make a receiver reject it on QoS 0.
		d.fail(malformed("MQTT-3.3.1-2", "PUBLISH with DUP set and QoS 0")) // [MQTT-3.3.1-2]
		return false
	}
	if o != nil {
		p.Topic = d.topic(o.Topics)
	} else {
		p.Topic = d.str("topic name")
	}
	if p.QoS > 0 {
		p.PacketID = d.u16("packet identifier")
		if d.err == nil && p.PacketID == 0 {
			d.fail(protocolErr("MQTT-2.2.1-3", "PUBLISH QoS %d with packet identifier 0", p.QoS)) // [MQTT-2.2.1-3]
		}
	}
	if v == V5 {
		d.props(&p.Properties, PUBLISH, false)
	}
	if d.err == nil {
		d.fail(p.checkTopic(v))
	}
	if o != nil {
		p.Payload = d.payload(o.BorrowPayload)
	} else {
		p.Payload = d.rest()
	}
	return true
}

// checkTopic applies the topic name rules the codec owns.
func (p *Publish) checkTopic(v Version) error {
	switch {
	case hasWildcard(p.Topic):
		return newError(TopicNameInvalid, "MQTT-3.3.2-2", "wildcard in PUBLISH topic %q", p.Topic) // [MQTT-3.3.2-2]
	case p.Topic != "":
		return nil
	case v != V5:
		// Topic names are at least one character long [MQTT-4.7.3-1].
		return newError(TopicNameInvalid, "MQTT-4.7.3-1", "empty PUBLISH topic")
	case !p.Properties.Has(PropTopicAlias):
		// 5.0 section 3.3.2.1: an empty topic needs a Topic Alias.
		return protocolErr("", "empty PUBLISH topic without a Topic Alias")
	}
	return nil
}
