package packet

// Encode implements Packet. AUTH exists only in 5.0; for 3.1.x Encode
// returns an error. A Success code without properties is written as the
// two-byte form [MQTT-3.15.2.1].
func (p *Auth) Encode(dst []byte, v Version) ([]byte, error) {
	if v != V5 {
		return dst, errEncode(AUTH, "AUTH does not exist in MQTT "+v.String())
	}
	return encodeReasonProps(dst, AUTH, p.ReasonCode, &p.Properties)
}

func decodeAuth(d *decoder) *Auth {
	p := &Auth{}
	p.ReasonCode, p.Properties = decodeReasonProps(d, AUTH)
	return p
}
