package broker

import (
	"errors"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// Store persists what a restart must not lose: persistent sessions with
// their subscriptions, queued and inflight messages, inbound QoS 2 packet
// ids and delayed wills, and retained messages. The broker keeps its working
// state in memory and tells the store every change as an Op; the store is a
// journal it can be rebuilt from. The interface lives here, with its
// consumer; implementations live in package store.
//
// Durability contract: Append never blocks on I/O (it is called with session
// locks held). Before the broker writes a packet whose meaning depends on
// ops (a PUBACK/PUBREC for a publish it queued, a PUBLISH with a packet id,
// a PUBREL), the connection's writer calls Wait with the ticket of those
// ops, so many connections share one flush (group commit).
type Store interface {
	// Load returns everything stored, for the broker to resume from. It
	// is called once, by New.
	Load() (*StoredState, error)
	// Append hands ops to the store, in order, and returns the ticket of
	// the last one.
	Append(ops ...Op) Ticket
	// Wait returns when every op up to t is durable, or with the error
	// that prevents it (the broker then closes the connection rather than
	// acknowledge what it could not keep).
	Wait(t Ticket) error
	// Close flushes and releases the store.
	Close() error
}

// Grouper is implemented by a Store that can make the ops of several
// Appends durable together. A store that commits as ops arrive can make an
// Append durable while the next one is still to come, and so a crash can
// keep the first op of a change made in several Appends and lose the rest;
// Hold prevents that: no op appended after Hold becomes durable before the
// matching Release, and then everything appended up to that point becomes
// durable at once (one commit: all of it or none of it survives a crash).
// Holds may overlap (several publishers); the ops of overlapping holds
// then become durable together, once the last of them is released. Ops
// appended before the Hold are committed meanwhile as usual.
//
// A hold must be short, and its holder must not Wait for a ticket appended
// after its Hold: that Wait would never return. Other goroutines' Waits
// for such tickets return after the Release.
//
// The broker holds the store across the ops of one QoS 2 PUBLISH from a
// persistent session: its packet id (OpInboundPut) and the message's
// deliveries to every matching session and its retained change, which the
// sessions append one after another (conn.publishQoS2). Kept without its
// deliveries, the id would make the publisher's resend after a restart
// look like a duplicate, and the message would be lost; kept without the
// id, the deliveries would be made twice. A Store that can become durable
// between two Appends and does not implement Grouper has that window.
type Grouper interface {
	Hold()
	Release()
}

// holdStore holds the store (Grouper) if it can be held, and reports
// whether it did; releaseStore ends the hold.
func (s *Server) holdStore() bool {
	g, ok := s.opts.Store.(Grouper)
	if ok {
		g.Hold()
	}
	return ok
}

func (s *Server) releaseStore() { s.opts.Store.(Grouper).Release() }

// ErrStoreFull is wrapped by store errors that mean "no room to keep more"
// (a full disk). While a store reports it, the broker refuses new QoS 1/2
// publishes with 0x97 Quota exceeded (3.1.x publishers are disconnected,
// having no way to be told) instead of acknowledging what it cannot keep.
var ErrStoreFull = errors.New("store full")

// HealthChecker is implemented by stores that can tell up front that they
// cannot take more writes; the broker asks before accepting a QoS 1/2
// publish (refused with 0x97) or a CONNECT for a session that outlives
// its connection (CONNACK 0x97; 3.1.x 0x03). It must be cheap: it is
// called per publish.
type HealthChecker interface{ Healthy() error }

// Ticket orders appended ops; a larger ticket is later. Zero means none.
type Ticket uint64

// OpKind says what an Op changes.
type OpKind uint8

// Op kinds. Session-scoped ops carry ClientID.
const (
	OpSessionPut OpKind = iota + 1 // Session: create or update a persistent session
	OpSessionDel                   // remove a session with everything it owns
	OpSubPut                       // Sub: add or replace a subscription
	OpSubDel                       // Sub.Filter: remove a subscription
	OpQueuePut                     // Delivery: a message queued or inflight for a session
	OpQueueDel                     // Delivery.Seq: delivery completed or dropped
	OpInboundPut                   // PacketID: inbound QoS 2 id awaiting PUBREL; Nonce: its routing is not confirmed yet (origin.go)
	OpInboundDel                   // PacketID: PUBREL received
	OpRetainPut                    // Msg: retained message for Msg.Topic
	OpRetainDel                    // Topic: retained message cleared
)

// Op is one change to persisted state.
type Op struct {
	Kind     OpKind
	ClientID string
	Session  StoredSession // OpSessionPut: fields other than Subs, Queue, Inbound
	Sub      StoredSub
	Delivery StoredDelivery
	PacketID uint16
	// Nonce, on OpInboundPut: the Origin nonce of an id whose routing the
	// cluster has not confirmed yet; 0 once routed (origin.go). A store
	// that drops it loses only that: a restart from it takes the id for
	// routed.
	Nonce uint64
	Msg   *Message
	Topic string
}

// StoredState is what Load returns.
type StoredState struct {
	Sessions []StoredSession
	Retained []*Message
}

// StoredSession is a persistent session.
type StoredSession struct {
	ClientID string
	Expiry   uint32 // seconds; 0xFFFFFFFF never
	// DisconnectedAt is when the client went offline; zero while
	// connected (after a crash, the load time counts as the disconnect).
	DisconnectedAt time.Time
	Will           *Message  // a will that is still due, if any
	WillAt         time.Time // when the will is due; zero while connected
	// WillDelay is the will's Will Delay Interval. Stores may drop it;
	// the cluster needs it to treat the will of a connection that ended
	// with its node as a takeover would [MQTT-3.1.3-9].
	WillDelay time.Duration
	Subs      []StoredSub      // Load only
	Queue     []StoredDelivery // Load only, in Seq order
	Inbound   []uint16         // Load only
	// Unrouted are the ids of Inbound whose routing is not confirmed
	// (Op.Nonce); Load only.
	Unrouted []InboundIntent
	// Seen are the Origins (Origin.Hash) of messages the session got
	// lately, oldest first (origin.go). Stores may drop them: a session
	// restored without them may get a publisher's resend twice.
	Seen []uint64
}

// StoredSub is one subscription of a session.
type StoredSub struct {
	Filter string // as sent, "$share/g/..." included
	Opts   packet.SubOptions
	ID     uint32
}

// StoredDelivery is one message on its way to a session. PacketID is set
// once it was sent (inflight); Released once PUBREC came back.
type StoredDelivery struct {
	Seq      uint64
	Msg      *Message
	QoS      packet.QoS
	Retain   bool
	SubIDs   []uint32
	PacketID uint16
	Released bool
	// Claim, set by a cluster on a delivery not sent yet of a session it
	// adopts (Adopt) or restores from its own store (a Store's Load),
	// holds the delivery in the queue until answered (QueuedClaim). Not
	// stored: stores neither write nor read it.
	Claim *QueuedClaim
}

// storeFailed decides what becomes of output held back because the store
// could not confirm its ops durable (Wait failed with err). Those ops were
// appended: the store may still write them (the disk store retries a
// failed write until it succeeds; the cluster's replication keeps sending
// them), and a message routed with them already sits in its subscribers'
// sessions. The outcome is unknown, so the held-back output may say
// neither "taken" nor "refused": an MQTT 5 PUBACK/PUBREC >= 0x80 means
// "not accepted" [MQTT-3.4.2.1], a lie if the message is delivered later.
// The connection is closed instead: MQTT 5 gets DISCONNECT 0x80 with a
// Reason String saying so, 3.1.x a plain close, and the client resends
// its unacknowledged publishes [MQTT-4.4.0-1]. Inbound QoS 2 ids stay
// remembered, so a DUP resend is answered PUBREC without being routed
// again. A refusal known before anything was appended (a store that
// reports itself unhealthy: 0x97) is answered in handlePublish instead.
// A CONNACK in the output becomes a failure CONNACK (3.1.x: 0x03 Server
// unavailable) before the close. It returns what to write before closing.
func (c *conn) storeFailed(blocks [][]byte, err error) []byte {
	if ack := failConnack(blocks, c.version, err); ack != nil {
		c.logger().Error("store failed; refusing the connection", "err", err)
		return ack
	}
	c.logger().Error("store could not confirm ops in time; closing connection, outcome unknown", "err", err)
	return c.unknownDisconnect("the server could not confirm in time that it kept what this connection sent " +
		"(publishes may or may not be delivered): send them again")
}

// unknownDisconnect is the MQTT 5 DISCONNECT 0x80 that ends a connection
// whose acknowledgements could not be decided (storeFailed, flush), with
// why as its Reason String when the client asked for problem information
// [MQTT-3.1.2-29]; nil for 3.1.x, which has no server DISCONNECT.
func (c *conn) unknownDisconnect(why string) []byte {
	if c.version != packet.V5 {
		return nil
	}
	dp := &packet.Disconnect{ReasonCode: packet.UnspecifiedError}
	if c.problemInfo {
		dp.Properties.ReasonString = why
		dp.Properties.Set(packet.PropReasonString)
	}
	out, _ := dp.Encode(nil, packet.V5)
	return out
}

// failConnack returns the failure CONNACK to write in place of a CONNACK
// held back in blocks (0x97 for a full store, else 0x80; 3.1.x: 0x03), or
// nil if there is none: a CONNACK is the first packet of a connection,
// and nothing else can stand before it.
func failConnack(blocks [][]byte, v packet.Version, err error) []byte {
	i := 0
	for i < len(blocks) && len(blocks[i]) == 0 {
		i++
	}
	if i == len(blocks) {
		return nil
	}
	if h, perr := packet.ParseFixedHeader(blocks[i]); perr != nil || h.Type != packet.CONNACK {
		return nil
	}
	rc := packet.UnspecifiedError
	if errors.Is(err, ErrStoreFull) {
		rc = packet.QuotaExceeded
	}
	ack := &packet.Connack{ReasonCode: rc}
	if v != packet.V5 {
		ack.ReasonCode = packet.ConnackCode311(rc)
	}
	out, _ := ack.Encode(nil, v)
	return out
}
