package cluster

import (
	"encoding/base64"
	"encoding/binary"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/packet"
)

// A persistent session moves from its old owner to the node a client
// connects to in the old owner's answer to the release request, as bytes:
//
//	version   byte
//	expiry    uvarint  Session Expiry Interval, seconds
//	will      byte     0: none; 1: a delayed will, then milliseconds until
//	                   it is due (uvarint); 2: the will of the connection
//	                   just taken over, then its delay in milliseconds
//	                   (uvarint); for 1 and 2 then the will as a message
//	subs      uvarint count, then per subscription: filter (string),
//	                   options (byte: QoS bits 0-1, No Local 2, Retain As
//	                   Published 3, Retain Handling 4-5), identifier (uvarint)
//	queue     uvarint count, then per delivery in order (inflight first):
//	                   QoS, RETAIN, released (bytes), packet id (uvarint),
//	                   subscription ids (uvarint count, uvarints), message
//	inbound   uvarint count, then packet ids (uvarints)
//	unrouted  uvarint count, then per id of inbound whose routing is not
//	          confirmed: packet id, nonce (uvarints; broker.Origin)
//	seen      uvarint count, then Origin hashes (uvarints), oldest first
//
// A message is a string holding a forwarded message (wire.go) without
// groups, with its place when it has one (wirePlaceVersion).

// appendMessage appends m in that form. here is the place Source of the
// node writing it (Node.here), for a message routed on it (queuedPlace);
// empty for a message that is not queued (a will).
func appendMessage(b []byte, m *broker.Message, here string) ([]byte, error) {
	pub, err := encodePublish(m)
	if err != nil {
		return nil, err
	}
	// With its place (wirePlaceVersion): a session adopted from a record
	// or a handover orders what was held for it against its queue by it
	// (broker.CatchUp; TestReproPausedOwnerMovesLive).
	return appendString(b, string(encodeForwardPlace(m, nil, pub, m.Origin(), boolBit(m.Resent(), 4), queuedPlace(m, here)))), nil
}

// queuedPlace is the place a queued copy of m is written with: its own,
// or for a message routed on the writing node (broker.Message.RoutedHere),
// whose copies carry none, the place its forwards and holds carry
// (originKey.place: here, the node and incarnation, and m.ID). Written
// without one, a moved queue's messages published on the old owner were
// no anchors for the new owner's catch-up, and what was held for the
// session of the same publisher, older, went behind them all
// (bench/jepsen/RESULTS.md, ord31: test/jepsen TestClusterFull long
// faults seed 1123, ps3 got pub2#190-#195 after #198-#200;
// TestMovedLocalPlaced).
func queuedPlace(m *broker.Message, here string) broker.Place {
	if p := m.Place(); p.Source != "" || here == "" || !m.RoutedHere() || m.ID == 0 {
		return p
	}
	return broker.Place{Source: here, Seq: m.ID}
}

func readMessage(r *reader) *broker.Message {
	s := r.string()
	if r.err != nil {
		return nil
	}
	rm, err := decodeForward([]byte(s))
	if err != nil {
		r.err = err
		return nil
	}
	m := &broker.Message{Topic: rm.Topic, Payload: rm.Payload, Props: rm.Props, From: rm.From, QoS: rm.QoS, Retain: rm.Retain}
	m.SetOrigin(rm.Origin)
	m.SetPlace(rm.Place)
	m.SetCreated(time.Now())
	if rm.ExpiresIn > 0 {
		m.SetExpires(time.Now().Add(rm.ExpiresIn))
	}
	return m
}

// encodeSession encodes rec (above); here as appendMessage's.
func encodeSession(rec *broker.StoredSession, here string) ([]byte, error) {
	b := binary.AppendUvarint([]byte{wireVersion}, uint64(rec.Expiry))
	var err error
	var will byte
	switch {
	case rec.Will != nil && rec.WillAt.IsZero():
		will = 2
	case rec.Will != nil && time.Until(rec.WillAt) > 0:
		will = 1
	}
	b = append(b, will)
	switch will {
	case 1:
		b = binary.AppendUvarint(b, uint64(max(time.Until(rec.WillAt).Milliseconds(), 1)))
	case 2:
		b = binary.AppendUvarint(b, uint64(rec.WillDelay.Milliseconds()))
	}
	if will != 0 {
		if b, err = appendMessage(b, rec.Will, ""); err != nil {
			return nil, err
		}
	}
	b = binary.AppendUvarint(b, uint64(len(rec.Subs)))
	for _, s := range rec.Subs {
		b = appendString(b, s.Filter)
		o := s.Opts
		b = append(b, byte(o.QoS)|boolBit(o.NoLocal, 2)|boolBit(o.RetainAsPublished, 3)|o.RetainHandling<<4)
		b = binary.AppendUvarint(b, uint64(s.ID))
	}
	b = binary.AppendUvarint(b, uint64(len(rec.Queue)))
	for _, d := range rec.Queue {
		b = append(b, byte(d.QoS), boolBit(d.Retain, 0), boolBit(d.Released, 0))
		b = binary.AppendUvarint(b, uint64(d.PacketID))
		b = binary.AppendUvarint(b, uint64(len(d.SubIDs)))
		for _, id := range d.SubIDs {
			b = binary.AppendUvarint(b, uint64(id))
		}
		if b, err = appendMessage(b, d.Msg, here); err != nil {
			return nil, err
		}
	}
	b = binary.AppendUvarint(b, uint64(len(rec.Inbound)))
	for _, pid := range rec.Inbound {
		b = binary.AppendUvarint(b, uint64(pid))
	}
	b = binary.AppendUvarint(b, uint64(len(rec.Unrouted)))
	for _, in := range rec.Unrouted {
		b = binary.AppendUvarint(binary.AppendUvarint(b, uint64(in.PacketID)), in.Nonce)
	}
	return appendSeen(b, rec.Seen), nil
}

func decodeSession(id string, b []byte) (*broker.StoredSession, error) {
	r := reader{b: b}
	if r.byte() != wireVersion {
		return nil, errWire
	}
	rec := &broker.StoredSession{ClientID: id, Expiry: uint32(r.uvarint())}
	switch r.byte() {
	case 0:
	case 1:
		rec.WillAt = time.Now().Add(time.Duration(r.uvarint()) * time.Millisecond)
		rec.Will = readMessage(&r)
	case 2:
		rec.WillDelay = time.Duration(r.uvarint()) * time.Millisecond
		rec.Will = readMessage(&r)
	default:
		return nil, errWire
	}
	n := r.uvarint()
	for i := uint64(0); i < n && r.err == nil; i++ {
		s := broker.StoredSub{Filter: r.string()}
		o := r.byte()
		s.Opts = packet.SubOptions{QoS: packet.QoS(o & 3), NoLocal: o&4 != 0, RetainAsPublished: o&8 != 0, RetainHandling: o >> 4 & 3}
		s.ID = uint32(r.uvarint())
		rec.Subs = append(rec.Subs, s)
	}
	n = r.uvarint()
	for i := uint64(0); i < n && r.err == nil; i++ {
		d := broker.StoredDelivery{QoS: packet.QoS(r.byte() & 3), Retain: r.byte() == 1, Released: r.byte() == 1}
		d.PacketID = uint16(r.uvarint())
		k := r.uvarint()
		for j := uint64(0); j < k && r.err == nil; j++ {
			d.SubIDs = append(d.SubIDs, uint32(r.uvarint()))
		}
		d.Msg = readMessage(&r)
		rec.Queue = append(rec.Queue, d)
	}
	n = r.uvarint()
	for i := uint64(0); i < n && r.err == nil; i++ {
		rec.Inbound = append(rec.Inbound, uint16(r.uvarint()))
	}
	n = r.uvarint()
	for i := uint64(0); i < n && r.err == nil; i++ {
		rec.Unrouted = append(rec.Unrouted, broker.InboundIntent{PacketID: uint16(r.uvarint()), Nonce: r.uvarint()})
	}
	rec.Seen = readSeen(&r)
	if r.err != nil || len(r.b) != 0 {
		return nil, errWire
	}
	return rec, nil
}

// appendSeen appends a session's Origin hashes (broker.StoredSession.Seen):
// a count, then uvarints.
func appendSeen(b []byte, seen []uint64) []byte {
	b = binary.AppendUvarint(b, uint64(len(seen)))
	for _, h := range seen {
		b = binary.AppendUvarint(b, h)
	}
	return b
}

func readSeen(r *reader) []uint64 {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.err = errWire
		return nil
	}
	var seen []uint64
	for i := uint64(0); i < n && r.err == nil; i++ {
		seen = append(seen, r.uvarint())
	}
	return seen
}

// heldPosHeader names the NATS header of a release answer that hands a
// session over (reply 1) while the held reads of the answering node were
// not done for it (its wait cut at its bound, awaitHeld): where each held
// subject this node followed for the session is to be read on from by
// the new owner (heldPos). A header, so that an older claimer, which
// knows only the reply's bytes, ignores it and adopts the session as
// before; its value is base64 (headers are text) of:
//
//	version   byte
//	count     uvarint, then per held subject:
//	node      string   whose held subject it is
//	from      uvarint  stream sequence to read from (0: by time, since)
//	since     uvarint  Unix nanoseconds where a read by time starts (0: none)
//	floor     uvarint  Unix nanoseconds before which nothing held is the
//	                   session's (0: none)
const heldPosHeader = "Roost-Held-Pos"

// heldPos is where the old owner's follower of one node's held subject was
// for a session handed over before it had read for it: every message
// before it was applied to the session there (so the handover carries
// it), and what comes from it on the new owner reads (heldFollower: from,
// since, floor).
type heldPos struct {
	node  string
	from  uint64
	since time.Time
	floor time.Time
	// copyHas: the place is that of the node's own follower of its own
	// subject (withOwnBehind, ownCatchFrom), or was handed on from one,
	// which skips what is kept there for a disowned copy (keep.go): the
	// copy had it, and a live move carried it. Read for the session
	// anyway, every such kept message came again (left out as one the
	// session holds), and for a share group each was claimed again one
	// by one: a named read of a few hundred of them took 1.4-2.5 s, the
	// session caught up (sent nothing) all that while, its release
	// answers waited for it (awaitHeld) and its disowned copy kept every
	// forward meanwhile, the next read longer still; the queue passed
	// MaxQueued and dropped acknowledged messages
	// (TestClusterLiveHandoverRoundsNamed/shared: 11,710 lost). Sent in
	// heldPosCopyHeader, beside heldPosHeader.
	copyHas bool
	// keptFrom: for a place named by sequence and read for a disowned
	// copy's keep too (keptUncarried), from when that keep went with
	// no move; the made cap of this node's ops counts from there
	// (handedFloor), as for a place read by time. Not sent.
	keptFrom time.Time
}

// heldPosCopyHeader names the NATS header that goes with heldPosHeader:
// one byte per place, in its order, '1' for a place whose copyHas is set
// and '0' for one whose is not. A header of its own, so that an older
// claimer ignores it (and reads those kept messages again, as before),
// and an older node's answer, without it, has every copyHas unset.
const heldPosCopyHeader = "Roost-Held-Pos-Copy"

// encodeHeldPosCopy is heldPosCopyHeader's value for ps; "" when no
// place has copyHas.
func encodeHeldPosCopy(ps []heldPos) string {
	if !slices.ContainsFunc(ps, func(p heldPos) bool { return p.copyHas }) {
		return ""
	}
	b := make([]byte, len(ps))
	for i, p := range ps {
		b[i] = '0'
		if p.copyHas {
			b[i] = '1'
		}
	}
	return string(b)
}

// decodeHeldPosCopy sets the copyHas of ps from heldPosCopyHeader's
// value v; a value that does not fit ps sets none and is errWire.
func decodeHeldPosCopy(ps []heldPos, v string) error {
	if v == "" {
		return nil
	}
	if len(v) != len(ps) || strings.Trim(v, "01") != "" {
		return errWire
	}
	for i := range ps {
		ps[i].copyHas = v[i] == '1'
	}
	return nil
}

// encodeHeldPos is heldPosHeader's value for ps; "" for none.
func encodeHeldPos(ps []heldPos) string {
	if len(ps) == 0 {
		return ""
	}
	b := binary.AppendUvarint([]byte{wireVersion}, uint64(len(ps)))
	for _, p := range ps {
		b = appendString(b, p.node)
		b = binary.AppendUvarint(b, p.from)
		b = binary.AppendUvarint(b, unixNanos(p.since))
		b = binary.AppendUvarint(b, unixNanos(p.floor))
	}
	return base64.RawStdEncoding.EncodeToString(b)
}

// decodeHeldPos reads heldPosHeader's value; none for "".
func decodeHeldPos(v string) ([]heldPos, error) {
	if v == "" {
		return nil, nil
	}
	b, err := base64.RawStdEncoding.DecodeString(v)
	if err != nil {
		return nil, errWire
	}
	r := reader{b: b}
	if r.byte() != wireVersion {
		return nil, errWire
	}
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		return nil, errWire
	}
	ps := make([]heldPos, 0, n)
	for i := uint64(0); i < n && r.err == nil; i++ {
		p := heldPos{node: r.string(), from: r.uvarint()}
		p.since, p.floor = fromUnixNanos(r.uvarint()), fromUnixNanos(r.uvarint())
		ps = append(ps, p)
	}
	if r.err != nil || len(r.b) != 0 {
		return nil, errWire
	}
	return ps, nil
}

// unixNanos is t in Unix nanoseconds, 0 for the zero time (or one before
// 1970, which no held message has).
func unixNanos(t time.Time) uint64 {
	if t.IsZero() || t.UnixNano() <= 0 {
		return 0
	}
	return uint64(t.UnixNano())
}

func fromUnixNanos(ns uint64) time.Time {
	if ns == 0 || ns > math.MaxInt64 {
		return time.Time{}
	}
	return time.Unix(0, int64(ns))
}
