package packet

// Encode implements Packet: PINGREQ is two bytes in every version [MQTT-3.12].
func (p *Pingreq) Encode(dst []byte, v Version) ([]byte, error) {
	if err := checkVersion(PINGREQ, v); err != nil {
		return dst, err
	}
	return append(dst, byte(PINGREQ)<<4, 0), nil
}

// Encode implements Packet: PINGRESP is two bytes in every version [MQTT-3.13].
func (p *Pingresp) Encode(dst []byte, v Version) ([]byte, error) {
	if err := checkVersion(PINGRESP, v); err != nil {
		return dst, err
	}
	return append(dst, byte(PINGRESP)<<4, 0), nil
}
