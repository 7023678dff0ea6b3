package cluster

import (
	"encoding/binary"
	"errors"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/packet"
)

// The bytes nodes send each other. Everything starts with a version byte
// so that a later Roost can change the forms and still refuse (rather than
// misread) an older peer's.
const wireVersion = 1

// wirePlaceVersion starts a forwarded message's form that carries its
// place (below): the stored and handed-over form of a queued message
// (handover.go appendMessage). A version of its own, not a flag bit, so
// that an older node refuses it as malformed (it ignores unknown flag
// bits and would read the place's bytes as the PUBLISH) rather than
// misread it. Forwards between nodes carry no place (the receiver takes
// it from the batch: originKey.place), so they stay readable by an older
// node, but one: a held message passed on to a moved member's new owner
// (held.go passMissed) carries its own origin as its place, flagged held
// (flagHeld), since the batch's origin is the passing node's and not the
// message's (test/jepsen TestClusterFull seed 883, session 28). What a
// rolling upgrade meets is in docs/cluster.md.
const wirePlaceVersion = 2

// errWire is returned for bytes a peer should never have sent.
var errWire = errors.New("cluster: malformed message from peer")

// A forwarded message is a small header and then the message as an MQTT 5
// PUBLISH packet, so that topic, payload and every property travel through
// the packet codec that already checks them:
//
//	version  byte
//	flags    byte     QoS (bits 0-1), RETAIN (bit 2), origin (bit 3),
//	                  resend (bit 4: a QoS 2 resend routed again under
//	                  its origin, broker.Message.Resent; older nodes
//	                  ignore it), groups only (bit 5: for the groups
//	                  named only, no plain subscription: a group
//	                  message passed on to a moved member's new node,
//	                  broker.RemoteMessage.GroupsOnly; an older node
//	                  ignores it and gives its plain subscribers a
//	                  second copy, as before), held (bit 6: a held
//	                  message passed on, its place the held message's
//	                  origin, broker.RemoteMessage.Late; only in the
//	                  form of wirePlaceVersion). Unknown bits are
//	                  ignored.
//	from     string   publishing client id (No Local)
//	expires  uvarint  Message Expiry left, in milliseconds; 0 none
//	groups   uvarint count, then strings: shared groups this node serves
//	origin   if bit 3: the broker.Origin of a persistent publisher's QoS 2
//	         message: client id (string), packet id, nonce (uvarints)
//	place    if version is wirePlaceVersion: the message's broker.Place,
//	         source (string, not empty) and sequence (uvarint)
//	publish  the rest: an MQTT 5 PUBLISH (QoS and RETAIN as above)
//
// Strings are a uvarint length and the bytes.

// encodePublish returns the PUBLISH part of a forwarded message, shared by
// every node it goes to.
func encodePublish(m *broker.Message) ([]byte, error) {
	p := packet.Publish{QoS: m.QoS, Retain: m.Retain, Topic: m.Topic, Payload: m.Payload}
	if m.QoS > 0 {
		p.PacketID = 1 // required by the codec; meaningless here
	}
	if m.Props != nil {
		p.Properties = *m.Props
	}
	return p.Encode(nil, packet.V5)
}

// encodeForward builds the message for one node from the shared PUBLISH.
func encodeForward(m *broker.Message, groups []string, pub []byte) []byte {
	return encodeForwardOrigin(m, groups, pub, broker.Origin{})
}

// Flag bits of a forwarded message beyond QoS and RETAIN.
const (
	flagOrigin     byte = 1 << 3
	flagResent     byte = 1 << 4
	flagGroupsOnly byte = 1 << 5
	flagHeld       byte = 1 << 6
)

// encodeForwardOrigin is encodeForward for a message under origin o (none
// when zero).
func encodeForwardOrigin(m *broker.Message, groups []string, pub []byte, o broker.Origin) []byte {
	return encodeForwardFlags(m, groups, pub, o, boolBit(m.Resent(), 4))
}

// encodeReforward is the forward of rm's message (m, its PUBLISH pub) for
// the share groups groups only, as a node passes it on (handover_live.go):
// rm's Origin and resend mark go with it. held says rm was held for this
// node (passMissed): its place (its origin's, deliverHeldTo) goes with it
// too, flagged held, so that the new owner orders it as the held message
// it is rather than as one this node routed (reforwardWait).
func encodeReforward(m *broker.Message, rm *broker.RemoteMessage, groups []string, pub []byte, held bool) []byte {
	extra := flagGroupsOnly | boolBit(rm.Resent, 4)
	if !held || rm.Place.Source == "" {
		return encodeForwardFlags(m, groups, pub, rm.Origin, extra)
	}
	return encodeForwardPlace(m, groups, pub, rm.Origin, extra|flagHeld, rm.Place)
}

// encodeForwardFlags builds a forward with the flags in extra (resend,
// groups only) beyond QoS, RETAIN and origin; resend only under an origin.
func encodeForwardFlags(m *broker.Message, groups []string, pub []byte, o broker.Origin, extra byte) []byte {
	return encodeForwardPlace(m, groups, pub, o, extra, broker.Place{})
}

// encodeForwardPlace is encodeForwardFlags with m's place p, in the form
// of wirePlaceVersion when p's Source is not empty.
func encodeForwardPlace(m *broker.Message, groups []string, pub []byte, o broker.Origin, extra byte, p broker.Place) []byte {
	flags := byte(m.QoS) | boolBit(m.Retain, 2) | extra&flagGroupsOnly
	if !o.IsZero() {
		flags |= flagOrigin | extra&flagResent
	}
	version := byte(wireVersion)
	size := forwardSize(m, groups, pub, o)
	if p.Source != "" {
		version = wirePlaceVersion
		size += 3 + len(p.Source) + binary.MaxVarintLen64
		flags |= extra & flagHeld
	}
	b := make([]byte, 0, size)
	b = append(b, version, flags)
	b = appendString(b, m.From)
	var left uint64
	if exp := m.Expires(); !exp.IsZero() {
		// At least 1 ms: 0 would read as "never".
		left = uint64(max(time.Until(exp).Milliseconds(), 1))
	}
	b = binary.AppendUvarint(b, left)
	b = binary.AppendUvarint(b, uint64(len(groups)))
	for _, g := range groups {
		b = appendString(b, g)
	}
	if !o.IsZero() {
		b = appendString(b, o.ClientID)
		b = binary.AppendUvarint(b, uint64(o.PacketID))
		b = binary.AppendUvarint(b, o.Nonce)
	}
	if p.Source != "" {
		b = appendString(b, p.Source)
		b = binary.AppendUvarint(b, p.Seq)
	}
	return append(b, pub...)
}

// forwardSize is at least the size of the forward encodeForwardFlags
// builds, so that it takes one allocation (uvarints of a string's length
// and of a packet id take at most 3 bytes: both under 2^21).
func forwardSize(m *broker.Message, groups []string, pub []byte, o broker.Origin) int {
	size := 2 + 3 + len(m.From) + 2*binary.MaxVarintLen64 + len(pub)
	for _, g := range groups {
		size += 3 + len(g)
	}
	if !o.IsZero() {
		size += 3 + len(o.ClientID) + 3 + binary.MaxVarintLen64
	}
	return size
}

// decodeForward reads a forwarded message.
func decodeForward(b []byte) (*broker.RemoteMessage, error) {
	r := reader{b: b}
	version := r.byte()
	if version != wireVersion && version != wirePlaceVersion {
		return nil, errWire
	}
	flags := r.byte()
	m := &broker.RemoteMessage{QoS: packet.QoS(flags & 3), Retain: flags&4 != 0, GroupsOnly: flags&flagGroupsOnly != 0}
	m.From = r.string()
	m.ExpiresIn = time.Duration(r.uvarint()) * time.Millisecond
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		return nil, errWire
	}
	m.Groups = make([]string, 0, n)
	for range n {
		m.Groups = append(m.Groups, r.string())
	}
	if flags&flagOrigin != 0 {
		m.Origin = broker.Origin{ClientID: r.string(), PacketID: uint16(r.uvarint()), Nonce: r.uvarint()}
		if m.Origin.IsZero() {
			return nil, errWire
		}
		m.Resent = flags&flagResent != 0
	}
	if version == wirePlaceVersion {
		m.Place = broker.Place{Source: r.string(), Seq: r.uvarint()}
		if m.Place.Source == "" {
			return nil, errWire
		}
		// Held: the receiver makes it Late only while a session
		// there catches up (deliverForward), as a held message read
		// there (deliverHeldTo).
		m.Late = flags&flagHeld != 0
	}
	if r.err != nil || m.QoS > 2 {
		return nil, errWire
	}
	h, err := packet.ParseFixedHeader(r.b)
	if err != nil || h.Type != packet.PUBLISH || h.HeaderLen+h.Remaining != len(r.b) {
		return nil, errWire
	}
	var p packet.Publish
	if err := packet.DecodePublish(h, r.b[h.HeaderLen:], packet.V5, &p); err != nil {
		return nil, errors.Join(errWire, err)
	}
	if p.QoS != m.QoS || p.Retain != m.Retain {
		return nil, errWire
	}
	m.Topic, m.Payload = p.Topic, p.Payload
	if p.Properties.Present != 0 {
		props := p.Properties
		m.Props = &props
	}
	return m, nil
}

func boolBit(v bool, bit uint) byte {
	if v {
		return 1 << bit
	}
	return 0
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// reader reads the forms above; the first problem sticks in err and makes
// every later read return zero values.
type reader struct {
	b   []byte
	err error
}

func (r *reader) byte() byte {
	if r.err != nil || len(r.b) == 0 {
		r.err = errWire
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errWire
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) string() string {
	n := r.uvarint()
	if r.err != nil || n > uint64(len(r.b)) {
		r.err = errWire
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}
