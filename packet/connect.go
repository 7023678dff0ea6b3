package packet

// CONNECT flags [MQTT-3.1.2.3].
const (
	connReserved   = 0x01
	connCleanStart = 0x02
	connWill       = 0x04
	connWillQoS    = 0x18
	connWillRetain = 0x20
	connPassword   = 0x40
	connUsername   = 0x80
)

// bridgeBit is set on the protocol level by a 3.1/3.1.1 bridge (see
// Connect.Bridge).
const bridgeBit = 0x80

// protocolName returns the name to write: ProtocolName when set, else the
// name the version uses.
func (p *Connect) protocolName(v Version) string {
	switch {
	case p.ProtocolName != "":
		return p.ProtocolName
	case v == V31:
		return "MQIsdp"
	}
	return "MQTT"
}

// flags builds the Connect Flags byte. A non-empty Username or Password
// sets its flag even when the caller forgot to.
func (p *Connect) flags() byte {
	f := boolBit(p.CleanStart, connCleanStart)
	if p.WillFlag {
		f |= connWill | byte(p.WillQoS&3)<<3 | boolBit(p.WillRetain, connWillRetain)
	}
	f |= boolBit(p.UsernameFlag || p.Username != "", connUsername)
	f |= boolBit(p.PasswordFlag || len(p.Password) > 0, connPassword)
	return f
}

// Encode implements Packet. The protocol level written is v, whatever
// ProtocolVersion says, with the bridge bit when Bridge is set and v is
// 3.1 or 3.1.1.
func (p *Connect) Encode(dst []byte, v Version) ([]byte, error) {
	if err := checkVersion(CONNECT, v); err != nil {
		return dst, err
	}
	f := p.flags()
	var s sizer
	s.str(p.protocolName(v))
	s.n += 4 // level, flags, keep alive
	var props, willProps int
	if v == V5 {
		props = s.props(&p.Properties, placeOf(CONNECT, false))
	}
	s.str(p.ClientID)
	if p.WillFlag {
		if v == V5 {
			willProps = s.props(&p.WillProperties, willPlace)
		}
		s.str(p.WillTopic)
		s.bin(p.WillPayload)
	}
	if f&connUsername != 0 {
		s.str(p.Username)
	}
	if f&connPassword != 0 {
		s.bin(p.Password)
	}
	b, err := header(dst, CONNECT, 0, &s)
	if err != nil {
		return dst, err
	}
	b = appendString(b, p.protocolName(v))
	level := byte(v)
	if p.Bridge && v != V5 {
		level |= bridgeBit
	}
	b = appendU16(append(b, level, f), p.KeepAlive)
	if v == V5 {
		b = appendProps(b, &p.Properties, placeOf(CONNECT, false), props)
	}
	b = appendString(b, p.ClientID)
	if p.WillFlag {
		if v == V5 {
			b = appendProps(b, &p.WillProperties, willPlace, willProps)
		}
		b = appendBinary(appendString(b, p.WillTopic), p.WillPayload)
	}
	if f&connUsername != 0 {
		b = appendString(b, p.Username)
	}
	if f&connPassword != 0 {
		b = appendBinary(b, p.Password)
	}
	return b, nil
}

// decodeConnect decodes a CONNECT body into p, which it overwrites. It
// reports whether the protocol level was read: from then on p holds it,
// even on error (see Decode).
func decodeConnect(body []byte, p *Connect) (bool, error) {
	*p = Connect{}
	d := &decoder{b: body}
	name := d.str("protocol name")
	level := Version(d.u8("protocol level"))
	if d.err != nil {
		return false, d.err
	}
	p.ProtocolVersion = level
	if level&bridgeBit != 0 && (level&^bridgeBit == V31 || level&^bridgeBit == V311) {
		// A mosquitto bridge (try_private): 0x83 or 0x84.
		level &^= bridgeBit
		p.ProtocolVersion, p.Bridge = level, true
	}
	switch {
	case name == "MQTT" && (level == V311 || level == V5):
		p.ProtocolName = "MQTT" // a constant: the name needs no copy
	case name == "MQIsdp" && level == V31:
		p.ProtocolName = "MQIsdp"
	default:
		// [MQTT-3.1.2-1] [MQTT-3.1.2-2]: the server answers with
		// Unsupported Protocol Version (0x01 in 3.1.1) and closes.
		p.ProtocolName = name
		return true, newError(UnsupportedProtocolVersion, "MQTT-3.1.2-2", "protocol %q level %d", name, byte(level))
	}
	f := d.u8("connect flags")
	p.KeepAlive = d.u16("keep alive")
	if d.err == nil {
		d.fail(p.setFlags(f))
	}
	if level == V5 {
		d.props(&p.Properties, CONNECT, false)
	}
	p.decodePayload(d)
	return true, d.end(CONNECT)
}

// setFlags checks the Connect Flags byte and records it in p.
func (p *Connect) setFlags(f byte) error {
	p.CleanStart = f&connCleanStart != 0
	p.WillFlag = f&connWill != 0
	p.WillQoS = QoS(f&connWillQoS) >> 3
	p.WillRetain = f&connWillRetain != 0
	p.UsernameFlag = f&connUsername != 0
	p.PasswordFlag = f&connPassword != 0
	switch {
	case f&connReserved != 0 && p.ProtocolVersion != V31:
		// 3.1.1 and 5.0 only: MQTT 3.1 leaves the bit "not used".
		return malformed("MQTT-3.1.2-3", "CONNECT reserved flag is set") // [MQTT-3.1.2-3]
	case p.WillQoS == 3:
		// 5.0 [MQTT-3.1.2-12]; 3.1.1 numbers it [MQTT-3.1.2-14].
		return malformed("MQTT-3.1.2-12", "will QoS 3")
	case !p.WillFlag && p.WillQoS != 0:
		// 5.0 [MQTT-3.1.2-11]; 3.1.1 numbers it [MQTT-3.1.2-13].
		return malformed("MQTT-3.1.2-11", "will QoS %d without will flag", p.WillQoS)
	case !p.WillFlag && p.WillRetain:
		// 5.0 [MQTT-3.1.2-13]; 3.1.1 numbers it [MQTT-3.1.2-15].
		return malformed("MQTT-3.1.2-13", "will retain without will flag")
	case p.PasswordFlag && !p.UsernameFlag && p.ProtocolVersion != V5:
		// 3.1.1 only: 5.0 allows a password without a user name.
		return malformed("MQTT-3.1.2-22", "password flag without user name flag") // [MQTT-3.1.2-22]
	}
	return nil
}

// decodePayload reads the payload fields in their fixed order [MQTT-3.1.3-1].
func (p *Connect) decodePayload(d *decoder) {
	p.ClientID = d.str("client identifier")
	if p.WillFlag {
		if p.ProtocolVersion == V5 {
			d.props(&p.WillProperties, CONNECT, true)
		}
		p.WillTopic = d.str("will topic")
		p.WillPayload = d.bin("will payload")
	}
	if p.UsernameFlag {
		p.Username = d.str("user name")
	}
	if p.PasswordFlag {
		p.Password = d.bin("password")
	}
}
