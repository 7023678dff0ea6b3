package packet

// Variable byte integers [MQTT-1.5.5]: seven bits per byte, least
// significant group first, the high bit set on every byte but the last, at
// most four bytes. Non-minimal encodings (e.g. 0x80 0x00 for 0) are
// accepted when decoding; the spec does not forbid them and peers send them.

// varintLen returns how many bytes appendVarint writes for n.
func varintLen(n int) int {
	switch {
	case n < 1<<7:
		return 1
	case n < 1<<14:
		return 2
	case n < 1<<21:
		return 3
	}
	return 4
}

// appendVarint appends n, which must be in 0..MaxVarint.
func appendVarint(b []byte, n int) []byte {
	for n >= 0x80 {
		b = append(b, byte(n)|0x80)
		n >>= 7
	}
	return append(b, byte(n))
}

// parseVarint decodes a variable byte integer at the start of b. It returns
// the value and the number of bytes used; size 0 means b ended before the
// last byte of the integer. A fifth byte is an error [MQTT-1.5.5-1].
func parseVarint(b []byte) (n, size int, err error) {
	shift := 0
	for i := 0; i < 4; i++ {
		if i >= len(b) {
			return 0, 0, nil
		}
		n |= int(b[i]&0x7F) << shift
		if b[i]&0x80 == 0 {
			return n, i + 1, nil
		}
		shift += 7
	}
	return 0, 0, malformed("MQTT-1.5.5-1", "variable byte integer longer than 4 bytes")
}
