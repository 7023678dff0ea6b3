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

// ErrStoreFull is wrapped by store errors that mean "no room to keep more"
// (a full disk). While a store reports it, the broker refuses new QoS 1/2
// publishes with 0x97 Quota exceeded (3.1.x publishers are disconnected,
// having no way to be told) instead of acknowledging what it cannot keep.
var ErrStoreFull = errors.New("store full")

// HealthChecker is implemented by stores that can tell up front that they
// cannot take more writes; the broker asks before accepting a QoS 1/2
// publish. It must be cheap: it is called per publish.
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
	OpInboundPut                   // PacketID: inbound QoS 2 id awaiting PUBREL
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
	Msg      *Message
	Topic    string
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
	Will           *Message         // a will that is still due, if any
	WillAt         time.Time        // when the will is due
	Subs           []StoredSub      // Load only
	Queue          []StoredDelivery // Load only, in Seq order
	Inbound        []uint16         // Load only
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
}
