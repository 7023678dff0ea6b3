package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/packet"
)

// Keys. Every key starts with one byte naming its kind; keys scoped to a
// session continue with the client id, length-prefixed so that one
// session's keys never share a prefix with another's, whatever bytes the
// ids hold.
const (
	kindVersion  = 'v' // "v" → formatVersion
	kindSession  = 's' // s|client → session record
	kindSub      = 'u' // u|client|filter → subscription
	kindQueue    = 'q' // q|client|seq (big-endian uint64) → delivery
	kindInbound  = 'i' // i|client|packet id (big-endian uint16) → empty
	kindOrigin   = 'o' // o|client|n (big-endian uint64, in put order) → Origin hash (big-endian uint64)
	kindMessage  = 'm' // m|id (big-endian uint64) → message
	kindRetained = 'r' // r|topic → message
)

// formatVersion is the on-disk format this code reads and writes. A store
// with another version is refused rather than misread.
const formatVersion = "roost-store/1"

var versionKey = []byte{kindVersion}

// errCorrupt marks a record that does not decode.
var errCorrupt = errors.New("corrupt record")

func clientKey(kind byte, client string) []byte {
	k := make([]byte, 0, 1+binary.MaxVarintLen32+len(client)+8)
	k = append(k, kind)
	k = binary.AppendUvarint(k, uint64(len(client)))
	return append(k, client...)
}

// splitClientKey returns the client id and the rest of a session-scoped key.
func splitClientKey(k []byte) (client string, rest []byte, err error) {
	n, w := binary.Uvarint(k[1:])
	if w <= 0 || uint64(len(k)-1-w) < n {
		return "", nil, fmt.Errorf("%w: key %q", errCorrupt, k)
	}
	start := 1 + w
	return string(k[start : start+int(n)]), k[start+int(n):], nil
}

func subKey(client, filter string) []byte { return append(clientKey(kindSub, client), filter...) }

func queueKey(client string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(clientKey(kindQueue, client), seq)
}

func inboundKey(client string, pid uint16) []byte {
	return binary.BigEndian.AppendUint16(clientKey(kindInbound, client), pid)
}

// originKey is where the n-th Origin of a session's deliveries is kept,
// also after the delivery itself is deleted (Disk.keepOrigin).
func originKey(client string, n uint64) []byte {
	return binary.BigEndian.AppendUint64(clientKey(kindOrigin, client), n)
}

func messageKey(id uint64) []byte { return binary.BigEndian.AppendUint64([]byte{kindMessage}, id) }

func retainedKey(topic string) []byte { return append([]byte{kindRetained}, topic...) }

// prefixEnd returns the first key after every key starting with p.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xFF {
			end[i]++
			return end[:i+1]
		}
	}
	return nil // p is all 0xFF: no upper bound
}

// A message is its own header followed by an MQTT 5 PUBLISH (QoS 0, so
// without packet id) carrying topic, properties and payload:
//
//	id uvarint | qos byte | flags byte | created varint (unix ns)
//	| expires varint (unix ns, 0 none) | from (uvarint length, bytes)
//	| [publisher: client id, username, listener (each uvarint length, bytes)]
//	| PUBLISH
//
// Flags: 1 retain; 2 the publisher follows (broker.Message.Publisher, kept
// for check_retain_source); 4 that publisher was the server's own; 8 the
// message's broker.Origin follows the publisher (client id, then packet id
// and nonce as uvarints), so that a session restored here is not given a
// publisher's resend of it again. A message without flags 2 and 8 is laid
// out as before publishers were kept, so a store written by an older
// version reads as it always did.
const (
	msgRetain            = 1
	msgPublisher         = 2
	msgPublisherInternal = 4
	msgOrigin            = 8
)

func appendMessage(b []byte, m *broker.Message) ([]byte, error) {
	b = binary.AppendUvarint(b, m.ID)
	b = append(b, byte(m.QoS))
	var flags byte
	if m.Retain {
		flags |= msgRetain
	}
	pub, hasPub := m.Publisher()
	if hasPub {
		flags |= msgPublisher
		if pub.Internal {
			flags |= msgPublisherInternal
		}
	}
	o := m.Origin()
	if !o.IsZero() {
		flags |= msgOrigin
	}
	b = append(b, flags)
	b = binary.AppendVarint(b, unixNano(m.Created()))
	b = binary.AppendVarint(b, unixNano(m.Expires()))
	b = appendString(b, m.From)
	if hasPub {
		b = appendString(appendString(appendString(b, pub.ClientID), pub.Username), pub.Listener)
	}
	if !o.IsZero() {
		b = binary.AppendUvarint(binary.AppendUvarint(appendString(b, o.ClientID), uint64(o.PacketID)), o.Nonce)
	}
	p := packet.Publish{Topic: m.Topic, Payload: m.Payload}
	if m.Props != nil {
		p.Properties = *m.Props
	}
	return p.Encode(b, packet.V5)
}

func decodeMessage(b []byte) (*broker.Message, error) {
	r := reader{b: b}
	m := &broker.Message{ID: r.uvarint()}
	m.QoS = packet.QoS(r.byte())
	flags := r.byte()
	m.Retain = flags&msgRetain != 0
	m.SetCreated(fromUnixNano(r.varint()))
	m.SetExpires(fromUnixNano(r.varint()))
	m.From = r.string()
	if flags&msgPublisher != 0 {
		var p broker.Publisher
		p.ClientID = r.string()
		p.Username = r.string()
		p.Listener = r.string()
		p.Internal = flags&msgPublisherInternal != 0
		m.SetPublisher(p)
	}
	if flags&msgOrigin != 0 {
		m.SetOrigin(broker.Origin{ClientID: r.string(), PacketID: uint16(r.uvarint()), Nonce: r.uvarint()})
	}
	if r.err != nil {
		return nil, r.err
	}
	h, err := packet.ParseFixedHeader(r.b)
	if err != nil || h.Type != packet.PUBLISH || h.HeaderLen+h.Remaining != len(r.b) {
		return nil, fmt.Errorf("%w: message %d: bad PUBLISH", errCorrupt, m.ID)
	}
	body := r.b[h.HeaderLen:]
	if decodePlain(m, body) {
		return m, nil
	}
	pk, err := packet.Decode(h, body, packet.V5)
	if err != nil {
		return nil, fmt.Errorf("%w: message %d: %v", errCorrupt, m.ID, err)
	}
	p := pk.(*packet.Publish)
	m.Topic, m.Payload = p.Topic, p.Payload
	if p.Properties.Present != 0 {
		props := p.Properties // not &p.Properties: that would keep the whole Publish
		m.Props = &props
	}
	return m, nil
}

// decodePlain decodes the body of a stored PUBLISH without properties —
// nearly every message — into m with one allocation for topic and payload
// together, where packet.Decode would allocate a Publish as well; start-up
// decodes every retained message. It reports false for anything else,
// which the caller hands to packet.Decode.
func decodePlain(m *broker.Message, body []byte) bool {
	// topic length u16 | topic | property length varint 0 | payload
	if len(body) < 3 {
		return false
	}
	n := int(binary.BigEndian.Uint16(body))
	if n == 0 || len(body) < 3+n || body[2+n] != 0 || !utf8.Valid(body[2:2+n]) {
		return false
	}
	own := make([]byte, len(body)-3)
	copy(own, body[2:2+n])
	copy(own[n:], body[3+n:])
	m.Topic = unsafe.String(&own[0], n) // own is never written again
	if len(own) > n {
		m.Payload = own[n:len(own):len(own)]
	}
	return true
}

// A session record: expiry u32 | disconnected varint | will at varint |
// flags byte (1 a will, 2 Origins) | [Origins the session got
// (broker.StoredSession.Seen): uvarint count, uvarints] | [will: a
// message]. Records of older versions have flags 0 or 1.
func appendSession(b []byte, s *broker.StoredSession) ([]byte, error) {
	b = binary.BigEndian.AppendUint32(b, s.Expiry)
	b = binary.AppendVarint(b, unixNano(s.DisconnectedAt))
	b = binary.AppendVarint(b, unixNano(s.WillAt))
	var flags byte
	if s.Will != nil {
		flags |= 1
	}
	if len(s.Seen) > 0 {
		flags |= 2
	}
	b = append(b, flags)
	if len(s.Seen) > 0 {
		b = binary.AppendUvarint(b, uint64(len(s.Seen)))
		for _, h := range s.Seen {
			b = binary.AppendUvarint(b, h)
		}
	}
	if s.Will == nil {
		return b, nil
	}
	return appendMessage(b, s.Will)
}

func decodeSession(client string, b []byte) (broker.StoredSession, error) {
	r := reader{b: b}
	s := broker.StoredSession{ClientID: client, Expiry: r.u32()}
	s.DisconnectedAt = fromUnixNano(r.varint())
	s.WillAt = fromUnixNano(r.varint())
	flags := r.byte()
	if flags&2 != 0 {
		n := r.uvarint()
		if n > uint64(len(r.b)) {
			return s, fmt.Errorf("%w: session %q: %d origins", errCorrupt, client, n)
		}
		for range n {
			s.Seen = append(s.Seen, r.uvarint())
		}
	}
	if r.err != nil {
		return s, r.err
	}
	if flags&1 != 0 {
		w, err := decodeMessage(r.b)
		if err != nil {
			return s, err
		}
		s.Will = w
	}
	return s, nil
}

// A subscription: options byte (qos | no local 4 | rap 8 | rh << 4) | id uvarint.
func appendSub(b []byte, s *broker.StoredSub) []byte {
	o := byte(s.Opts.QoS) | s.Opts.RetainHandling<<4
	if s.Opts.NoLocal {
		o |= 4
	}
	if s.Opts.RetainAsPublished {
		o |= 8
	}
	return binary.AppendUvarint(append(b, o), uint64(s.ID))
}

func decodeSub(filter string, b []byte) (broker.StoredSub, error) {
	r := reader{b: b}
	o := r.byte()
	s := broker.StoredSub{Filter: filter, ID: uint32(r.uvarint())}
	s.Opts = packet.SubOptions{QoS: packet.QoS(o & 3), NoLocal: o&4 != 0, RetainAsPublished: o&8 != 0, RetainHandling: o >> 4}
	return s, r.err
}

// A delivery: message id uvarint | qos byte | flags (1 retain, 2 released)
// | packet id u16 | count uvarint, subscription ids uvarint...
func appendDelivery(b []byte, d *broker.StoredDelivery) []byte {
	b = binary.AppendUvarint(b, d.Msg.ID)
	var flags byte
	if d.Retain {
		flags |= 1
	}
	if d.Released {
		flags |= 2
	}
	b = append(b, byte(d.QoS), flags)
	b = binary.BigEndian.AppendUint16(b, d.PacketID)
	b = binary.AppendUvarint(b, uint64(len(d.SubIDs)))
	for _, id := range d.SubIDs {
		b = binary.AppendUvarint(b, uint64(id))
	}
	return b
}

// decodeDelivery decodes a delivery; its Msg is left nil and the message
// id returned.
func decodeDelivery(seq uint64, b []byte) (broker.StoredDelivery, uint64, error) {
	r := reader{b: b}
	id := r.uvarint()
	d := broker.StoredDelivery{Seq: seq, QoS: packet.QoS(r.byte())}
	flags := r.byte()
	d.Retain, d.Released = flags&1 != 0, flags&2 != 0
	d.PacketID = r.u16()
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		return d, 0, fmt.Errorf("%w: delivery %d", errCorrupt, seq)
	}
	for range n {
		d.SubIDs = append(d.SubIDs, uint32(r.uvarint()))
	}
	return d, id, r.err
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// reader decodes fields in order; the first failure sticks in err and
// later reads return zero values.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail() {
	if r.err == nil {
		r.err = fmt.Errorf("%w: truncated", errCorrupt)
	}
	r.b = nil
}

func (r *reader) byte() byte {
	if len(r.b) < 1 {
		r.fail()
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) u16() uint16 {
	if len(r.b) < 2 {
		r.fail()
		return 0
	}
	v := binary.BigEndian.Uint16(r.b)
	r.b = r.b[2:]
	return v
}

func (r *reader) u32() uint32 {
	if len(r.b) < 4 {
		r.fail()
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) string() string {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.fail()
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}
