package packet

import (
	"encoding/binary"
	"unsafe"
)

// decoder reads the fields of one packet body. Its error is sticky: after
// the first failure every read returns a zero value and d.err keeps the
// first cause, so the per-packet decoders check it once per group of fields.
//
// Strings and binary fields are copied out of the caller's buffer, but not
// one by one: on the first such field the decoder copies the whole body once
// (own) and hands out views into that copy. Strings are built with
// unsafe.String over bytes nothing else references and nobody writes, and
// byte slices are capped (b[i:j:j]) so an append to one can never overwrite
// a neighbour. A decoded packet thus costs one allocation for all its text
// and data, whatever the number of fields.
type decoder struct {
	b   []byte // the body, owned by the caller; cut to the property block while props decodes it
	off int
	own []byte // lazily made private copy of the whole body
	err error
	// whole is the uncut body while b is cut (nil otherwise), so that a
	// copy made inside a property block still covers the payload after it.
	whole []byte
}

func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
}

// need reports whether n more bytes are there, failing with what otherwise.
func (d *decoder) need(n int, what string) bool {
	if d.err != nil {
		return false
	}
	if n > len(d.b)-d.off {
		d.fail(errShort(what))
		return false
	}
	return true
}

func (d *decoder) left() int { return len(d.b) - d.off }

func (d *decoder) u8(what string) byte {
	if !d.need(1, what) {
		return 0
	}
	d.off++
	return d.b[d.off-1]
}

func (d *decoder) u16(what string) uint16 {
	if !d.need(2, what) {
		return 0
	}
	d.off += 2
	return binary.BigEndian.Uint16(d.b[d.off-2:])
}

func (d *decoder) u32(what string) uint32 {
	if !d.need(4, what) {
		return 0
	}
	d.off += 4
	return binary.BigEndian.Uint32(d.b[d.off-4:])
}

func (d *decoder) varint(what string) int {
	if d.err != nil {
		return 0
	}
	n, size, err := parseVarint(d.b[d.off:])
	if err != nil {
		d.fail(err)
		return 0
	}
	if size == 0 {
		d.fail(errShort(what))
		return 0
	}
	d.off += size
	return n
}

// span reads a two-byte length and returns the offsets of the bytes after it.
func (d *decoder) span(what string) (i, j int) {
	n := int(d.u16(what))
	if !d.need(n, what) {
		return 0, 0
	}
	d.off += n
	return d.off - n, d.off
}

// str reads a UTF-8 Encoded String [MQTT-1.5.4] and checks it.
func (d *decoder) str(what string) string {
	i, j := d.span(what)
	if d.err != nil || i == j {
		return ""
	}
	if !validBytes(d.b[i:j]) {
		d.fail(malformed("MQTT-1.5.4-1", "%s: invalid UTF-8 or U+0000", what)) // [MQTT-1.5.4-1] [MQTT-1.5.4-2]
		return ""
	}
	return d.view(i, j)
}

// bin reads Binary Data [MQTT-1.5.6]; empty data is returned as nil.
func (d *decoder) bin(what string) []byte {
	i, j := d.span(what)
	if d.err != nil || i == j {
		return nil
	}
	return d.bytes(i, j)
}

// rest returns the copied remainder of the body, nil if empty.
func (d *decoder) rest() []byte {
	if d.err != nil || d.off == len(d.b) {
		return nil
	}
	i := d.off
	d.off = len(d.b)
	return d.bytes(i, d.off)
}

// topic reads a topic name as str does, through tc: a name tc holds is
// returned as the cached string, a new one is checked, allocated on its
// own (not as a view into the packet's copy, which the cache would keep
// alive) and added. With tc nil the name is still its own allocation.
func (d *decoder) topic(tc *TopicCache) string {
	const what = "topic name"
	i, j := d.span(what)
	if d.err != nil || i == j {
		return ""
	}
	b := d.b[i:j]
	if tc != nil {
		if s, ok := tc.lookup(b); ok {
			return s
		}
	}
	if !validBytes(b) {
		d.fail(malformed("MQTT-1.5.4-1", "%s: invalid UTF-8 or U+0000", what)) // [MQTT-1.5.4-1] [MQTT-1.5.4-2]
		return ""
	}
	s := string(b)
	if tc != nil {
		tc.add(s)
	}
	return s
}

// payload returns the rest of the body, nil if empty: with borrow, a view
// into the caller's body; else a copy, sharing the packet's copy if the
// properties made one, or of the payload alone.
func (d *decoder) payload(borrow bool) []byte {
	if d.err != nil || d.off == len(d.b) {
		return nil
	}
	i, j := d.off, len(d.b)
	d.off = j
	switch {
	case borrow:
		return d.b[i:j:j]
	case d.own != nil:
		return d.own[i:j:j]
	}
	own := make([]byte, j-i)
	copy(own, d.b[i:j])
	return own
}

func (d *decoder) bytes(i, j int) []byte {
	if d.own == nil {
		src := d.b
		if d.whole != nil {
			src = d.whole
		}
		d.own = make([]byte, len(src))
		copy(d.own, src)
	}
	return d.own[i:j:j]
}

func (d *decoder) view(i, j int) string {
	b := d.bytes(i, j)
	return unsafe.String(&b[0], len(b))
}

// end fails with MalformedPacket when bytes are left after the last field.
func (d *decoder) end(t Type) error {
	if d.err == nil && d.off != len(d.b) {
		d.fail(malformed("", "%v: %d unexpected bytes after the packet", t, len(d.b)-d.off))
	}
	return d.err
}

// sizer adds up the length of a packet's fields before encoding, and
// remembers whether a string or binary field is too long for its two-byte
// length prefix.
type sizer struct {
	n       int
	tooLong bool
}

func (s *sizer) str(v string) { s.lp(len(v)) }
func (s *sizer) bin(v []byte) { s.lp(len(v)) }

func (s *sizer) lp(n int) {
	if n > 0xFFFF {
		s.tooLong = true
	}
	s.n += 2 + n
}

// appendHeader appends the fixed header for a body of n bytes.
func appendHeader(b []byte, t Type, flags byte, n int) ([]byte, error) {
	if n > MaxVarint {
		return b, errEncode(t, "remaining length above 268,435,455")
	}
	b = append(b, byte(t)<<4|flags)
	return appendVarint(b, n), nil
}

// header checks the sizes and appends the fixed header; dst is grown once
// to hold the whole packet so the field appends never reallocate.
func header(dst []byte, t Type, flags byte, s *sizer) ([]byte, error) {
	if s.tooLong {
		return dst, errEncode(t, "string or binary field longer than 65,535 bytes")
	}
	if s.n > MaxVarint {
		return dst, errEncode(t, "remaining length above 268,435,455")
	}
	if need := 1 + varintLen(s.n) + s.n; cap(dst)-len(dst) < need {
		grown := make([]byte, len(dst), len(dst)+need)
		copy(grown, dst)
		dst = grown
	}
	return appendHeader(dst, t, flags, s.n)
}

func appendU16(b []byte, n uint16) []byte { return append(b, byte(n>>8), byte(n)) }

func appendU32(b []byte, n uint32) []byte {
	return append(b, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

func appendString(b []byte, s string) []byte {
	b = appendU16(b, uint16(len(s)))
	return append(b, s...)
}

func appendBinary(b []byte, v []byte) []byte {
	b = appendU16(b, uint16(len(v)))
	return append(b, v...)
}

func boolBit(v bool, bit byte) byte {
	if v {
		return bit
	}
	return 0
}

func checkVersion(t Type, v Version) error {
	if v != V31 && v != V311 && v != V5 {
		return errEncode(t, "unknown protocol version "+v.String())
	}
	return nil
}
