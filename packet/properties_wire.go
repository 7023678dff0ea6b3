package packet

import "math/bits"

// Wire form of MQTT 5 properties [MQTT-2.2.2]: a variable byte integer
// length, then identifier/value pairs.

type propKind byte

const (
	kindByte propKind = iota + 1
	kindU16
	kindU32
	kindVarint
	kindString
	kindBinary
	kindPair
)

// propPlace is a bit set of the places a property may appear in: bit t for
// packet type t, and bit 0 (the reserved type) for the Will Properties of a
// CONNECT.
type propPlace uint16

const willPlace propPlace = 1 << 0

func in(types ...Type) propPlace {
	var p propPlace
	for _, t := range types {
		p |= 1 << t
	}
	return p
}

type propSpec struct {
	kind  propKind
	where propPlace
}

// propSpecs is the table of MQTT 5.0 section 2.2.2.2: each identifier's data
// type and the packets it is allowed in.
var propSpecs = [PropSharedSubAvailable + 1]propSpec{
	PropPayloadFormat:        {kindByte, in(PUBLISH) | willPlace},
	PropMessageExpiry:        {kindU32, in(PUBLISH) | willPlace},
	PropContentType:          {kindString, in(PUBLISH) | willPlace},
	PropResponseTopic:        {kindString, in(PUBLISH) | willPlace},
	PropCorrelationData:      {kindBinary, in(PUBLISH) | willPlace},
	PropSubscriptionID:       {kindVarint, in(PUBLISH, SUBSCRIBE)},
	PropSessionExpiry:        {kindU32, in(CONNECT, CONNACK, DISCONNECT)},
	PropAssignedClientID:     {kindString, in(CONNACK)},
	PropServerKeepAlive:      {kindU16, in(CONNACK)},
	PropAuthMethod:           {kindString, in(CONNECT, CONNACK, AUTH)},
	PropAuthData:             {kindBinary, in(CONNECT, CONNACK, AUTH)},
	PropRequestProblemInfo:   {kindByte, in(CONNECT)},
	PropWillDelay:            {kindU32, willPlace},
	PropRequestResponseInfo:  {kindByte, in(CONNECT)},
	PropResponseInfo:         {kindString, in(CONNACK)},
	PropServerReference:      {kindString, in(CONNACK, DISCONNECT)},
	PropReasonString:         {kindString, in(CONNACK, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK, DISCONNECT, AUTH)},
	PropReceiveMaximum:       {kindU16, in(CONNECT, CONNACK)},
	PropTopicAliasMaximum:    {kindU16, in(CONNECT, CONNACK)},
	PropTopicAlias:           {kindU16, in(PUBLISH)},
	PropMaximumQoS:           {kindByte, in(CONNACK)},
	PropRetainAvailable:      {kindByte, in(CONNACK)},
	PropUserProperty:         {kindPair, in(CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, DISCONNECT, AUTH) | willPlace},
	PropMaximumPacketSize:    {kindU32, in(CONNECT, CONNACK)},
	PropWildcardSubAvailable: {kindByte, in(CONNACK)},
	PropSubIDAvailable:       {kindByte, in(CONNACK)},
	PropSharedSubAvailable:   {kindByte, in(CONNACK)},
}

// placeOf returns the propPlace bit for packet type t, or for Will
// Properties when will is set.
func placeOf(t Type, will bool) propPlace {
	if will {
		return willPlace
	}
	return 1 << t
}

func (p *Properties) u8(id PropID) *byte {
	switch id {
	case PropPayloadFormat:
		return &p.PayloadFormat
	case PropRequestProblemInfo:
		return &p.RequestProblemInfo
	case PropRequestResponseInfo:
		return &p.RequestResponseInfo
	case PropMaximumQoS:
		return &p.MaximumQoS
	case PropRetainAvailable:
		return &p.RetainAvailable
	case PropWildcardSubAvailable:
		return &p.WildcardSubAvailable
	case PropSubIDAvailable:
		return &p.SubIDAvailable
	}
	return &p.SharedSubAvailable
}

func (p *Properties) u16(id PropID) *uint16 {
	switch id {
	case PropServerKeepAlive:
		return &p.ServerKeepAlive
	case PropReceiveMaximum:
		return &p.ReceiveMaximum
	case PropTopicAliasMaximum:
		return &p.TopicAliasMaximum
	}
	return &p.TopicAlias
}

func (p *Properties) u32(id PropID) *uint32 {
	switch id {
	case PropMessageExpiry:
		return &p.MessageExpiry
	case PropSessionExpiry:
		return &p.SessionExpiry
	case PropWillDelay:
		return &p.WillDelay
	}
	return &p.MaximumPacketSize
}

func (p *Properties) str(id PropID) *string {
	switch id {
	case PropContentType:
		return &p.ContentType
	case PropResponseTopic:
		return &p.ResponseTopic
	case PropAssignedClientID:
		return &p.AssignedClientID
	case PropAuthMethod:
		return &p.AuthMethod
	case PropResponseInfo:
		return &p.ResponseInfo
	case PropServerReference:
		return &p.ServerReference
	}
	return &p.ReasonString
}

func (p *Properties) bin(id PropID) *[]byte {
	if id == PropCorrelationData {
		return &p.CorrelationData
	}
	return &p.AuthData
}

// written reports whether property id is encoded into place: it must be
// allowed there and present. User Property and Subscription Identifier are
// present when their slices are non-empty, whatever the Present bit says.
func (p *Properties) written(id PropID, place propPlace) bool {
	if propSpecs[id].where&place == 0 {
		return false
	}
	switch id {
	case PropUserProperty:
		return len(p.User) > 0
	case PropSubscriptionID:
		return len(p.SubscriptionIDs) > 0
	}
	return p.Has(id)
}

// candidates is the set of identifiers that may be written: the Present
// bits of known properties plus User Property and Subscription Identifier
// when their slices are non-empty.
func (p *Properties) candidates() uint64 {
	m := p.Present & knownProps
	if len(p.User) > 0 {
		m |= 1 << PropUserProperty
	}
	if len(p.SubscriptionIDs) > 0 {
		m |= 1 << PropSubscriptionID
	}
	return m
}

// knownProps has a bit for every identifier in propSpecs.
var knownProps = func() uint64 {
	var m uint64
	for id, spec := range propSpecs {
		if spec.kind != 0 {
			m |= 1 << id
		}
	}
	return m
}()

// size returns the length of the encoded properties, without the length
// prefix. Properties not allowed in place are not counted (nor written).
func (p *Properties) size(place propPlace, s *sizer) int {
	n := 0
	for m := p.candidates(); m != 0; m &= m - 1 {
		id := PropID(bits.TrailingZeros64(m))
		if !p.written(id, place) {
			continue
		}
		switch propSpecs[id].kind {
		case kindByte:
			n += 2
		case kindU16:
			n += 3
		case kindU32:
			n += 5
		case kindVarint:
			for _, v := range p.SubscriptionIDs {
				n += 1 + varintLen(int(v))
			}
		case kindString:
			n += 3 + checkLen(len(*p.str(id)), s)
		case kindBinary:
			n += 3 + checkLen(len(*p.bin(id)), s)
		case kindPair:
			for _, u := range p.User {
				n += 5 + checkLen(len(u.Key), s) + checkLen(len(u.Value), s)
			}
		}
	}
	return n
}

// checkLen returns n after noting in s whether it fits a two-byte length.
func checkLen(n int, s *sizer) int {
	if n > 0xFFFF {
		s.tooLong = true
	}
	return n
}

// props adds the encoded size of the properties, length prefix included,
// to s and returns the properties' own length for appendProps.
func (s *sizer) props(p *Properties, place propPlace) int {
	n := p.size(place, s)
	s.n += varintLen(n) + n
	return n
}

// appendProps appends the property length n (from sizer.props) and the
// properties allowed in place, in identifier order.
func appendProps(b []byte, p *Properties, place propPlace, n int) []byte {
	b = appendVarint(b, n)
	for m := p.candidates(); m != 0; m &= m - 1 {
		id := PropID(bits.TrailingZeros64(m))
		if !p.written(id, place) {
			continue
		}
		switch propSpecs[id].kind {
		case kindByte:
			b = append(b, byte(id), *p.u8(id))
		case kindU16:
			b = appendU16(append(b, byte(id)), *p.u16(id))
		case kindU32:
			b = appendU32(append(b, byte(id)), *p.u32(id))
		case kindVarint:
			for _, v := range p.SubscriptionIDs {
				b = appendVarint(append(b, byte(id)), int(v))
			}
		case kindString:
			b = appendString(append(b, byte(id)), *p.str(id))
		case kindBinary:
			b = appendBinary(append(b, byte(id)), *p.bin(id))
		case kindPair:
			for _, u := range p.User {
				b = appendString(append(b, byte(id)), u.Key)
				b = appendString(b, u.Value)
			}
		}
	}
	return b
}

// props decodes a property length and the properties after it into p,
// checking each against the rules for packet type t (or Will Properties).
func (d *decoder) props(p *Properties, t Type, will bool) {
	n := d.varint("property length")
	if d.err != nil {
		return
	}
	if n > d.left() {
		d.fail(malformed("", "%v: property length %d beyond the packet", t, n))
		return
	}
	// Nothing in the block may be read past its end: limit the body to it
	// while the properties are decoded.
	whole := d.b
	d.whole, d.b = whole, d.b[:d.off+n]
	place := placeOf(t, will)
	for d.err == nil && d.left() > 0 {
		d.prop(p, t, place)
	}
	d.whole, d.b = nil, whole
}

// prop decodes one property.
func (d *decoder) prop(p *Properties, t Type, place propPlace) {
	idv := d.varint("property identifier")
	if d.err != nil {
		return
	}
	if idv <= 0 || idv >= len(propSpecs) || propSpecs[idv].kind == 0 {
		d.fail(malformed("", "%v: unknown property identifier 0x%02X", t, idv))
		return
	}
	id := PropID(idv)
	spec := propSpecs[id]
	if spec.where&place == 0 {
		// Section 2.2.2.2 lists where each property may appear.
		d.fail(malformed("", "%v: property 0x%02X not allowed here", t, idv))
		return
	}
	repeatable := id == PropUserProperty || (id == PropSubscriptionID && t == PUBLISH && place != willPlace)
	if p.Has(id) && !repeatable {
		d.fail(protocolErr("MQTT-2.2.2-1", "%v: property 0x%02X included twice", t, idv)) // [MQTT-2.2.2-1]
		return
	}
	d.value(p, id, spec.kind)
	if d.err == nil {
		p.Set(id)
	}
}

// value decodes the value of property id and applies the value rules.
func (d *decoder) value(p *Properties, id PropID, kind propKind) {
	switch kind {
	case kindByte:
		v := d.u8("property")
		// Every byte property of 5.0 is a 0/1 flag; other values are a
		// Protocol Error (sections 3.1.2.11, 3.2.2.3, 3.3.2.3.2).
		if d.err == nil && v > 1 {
			d.fail(protocolErr("", "property 0x%02X must be 0 or 1, got %d", byte(id), v))
		}
		*p.u8(id) = v
	case kindU16:
		v := d.u16("property")
		if d.err == nil && v == 0 && id == PropReceiveMaximum {
			d.fail(protocolErr("", "Receive Maximum must not be 0")) // [3.1.2.11.3]
		}
		if d.err == nil && v == 0 && id == PropTopicAlias {
			// Alias 0 is never valid [MQTT-3.3.2-8]: Topic Alias invalid.
			d.fail(newError(TopicAliasInvalid, "MQTT-3.3.2-8", "Topic Alias must not be 0"))
		}
		*p.u16(id) = v
	case kindU32:
		v := d.u32("property")
		if d.err == nil && v == 0 && id == PropMaximumPacketSize {
			d.fail(protocolErr("", "Maximum Packet Size must not be 0")) // [3.1.2.11.4]
		}
		*p.u32(id) = v
	case kindVarint:
		v := d.varint("subscription identifier")
		if d.err == nil && v == 0 {
			d.fail(protocolErr("", "Subscription Identifier must not be 0")) // [3.3.2.3.8]
		}
		p.SubscriptionIDs = append(p.SubscriptionIDs, uint32(v))
	case kindString:
		*p.str(id) = d.str("property")
	case kindBinary:
		*p.bin(id) = d.bin("property")
	case kindPair:
		k := d.str("user property key")
		v := d.str("user property value")
		p.User = append(p.User, UserProperty{Key: k, Value: v})
	}
}
