package client

import (
	"fmt"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// Message is an application message: what Publish sends and what a
// MessageHandler receives.
type Message struct {
	Topic   string
	Payload []byte
	QoS     packet.QoS
	Retain  bool
	// Dup is set on a received message the server may have sent before.
	Dup bool
	// PacketID is the packet identifier a received QoS 1/2 message came
	// with (for logs); Publish ignores it.
	PacketID uint16
	// Properties are the MQTT 5 PUBLISH properties: Content Type, Response
	// Topic, Correlation Data, User Property, Message Expiry, Payload
	// Format, Subscription Identifier (received only). Ignored for 3.1.1.
	// Topic Alias is handled by the client and never shows here.
	Properties packet.Properties

	ack  *pendingAck // with Options.ManualAck: what Ack sends
	acks *ackQueue
}

// MessageHandler handles a received message. Handlers run one at a time on
// the client's dispatcher goroutine; see the package doc for what a slow
// handler delays and what it does not.
type MessageHandler func(*Message)

// Ack is the server's answer that completed an operation.
type Ack struct {
	// ReasonCode is the PUBACK/PUBCOMP reason code in MQTT 5 (Success,
	// No matching subscribers, ...); Success for QoS 0 and for 3.1.1.
	ReasonCode packet.ReasonCode
	// Properties are the acknowledgement's MQTT 5 properties (Reason
	// String, User Property).
	Properties packet.Properties
}

// Subscription is one topic filter to subscribe to and its handler.
type Subscription struct {
	Filter            string // may use + and #, or $share/group/filter
	QoS               packet.QoS
	NoLocal           bool // MQTT 5: do not receive own publishes
	RetainAsPublished bool // MQTT 5
	RetainHandling    byte // MQTT 5: 0 send retained, 1 only if new, 2 never
	// Handler receives the messages whose topic matches Filter. When nil,
	// they go to Options.DefaultHandler.
	Handler MessageHandler
}

func (s Subscription) wire() packet.Subscription {
	return packet.Subscription{Filter: s.Filter, Options: packet.SubOptions{
		QoS: s.QoS, NoLocal: s.NoLocal, RetainAsPublished: s.RetainAsPublished, RetainHandling: s.RetainHandling,
	}}
}

// Event is a kind of status change.
type Event int

// Status events, in the order a client's life goes through them.
const (
	// Connecting: an attempt to reach Status.Server starts.
	Connecting Event = iota + 1
	// Connected: CONNACK accepted; Status.SessionPresent says whether the
	// server resumed a session.
	Connected
	// ConnectionLost: a connection that was up ended, or an attempt failed;
	// Status.Err says why.
	ConnectionLost
	// Reconnecting: the next attempt, number Status.Attempt, starts after
	// Status.Delay.
	Reconnecting
	// Disconnected: the client stopped, after Disconnect (Err nil) or
	// after giving up (Err the last failure). It is the last event.
	Disconnected
)

var eventNames = [...]string{"", "connecting", "connected", "connection lost", "reconnecting", "disconnected"}

func (e Event) String() string {
	if e > 0 && int(e) < len(eventNames) {
		return eventNames[e]
	}
	return fmt.Sprintf("Event(%d)", int(e))
}

// Status is one status change, given to Options.OnStatus.
type Status struct {
	Event          Event
	Server         string          // the server URL concerned, if any
	SessionPresent bool            // Connected
	Connack        *packet.Connack // Connected
	Err            error           // ConnectionLost, Disconnected
	Attempt        int             // Reconnecting: consecutive failures so far + 1
	Delay          time.Duration   // Reconnecting
}

func (s Status) String() string {
	str := s.Event.String()
	switch s.Event {
	case Connecting:
		str += " to " + s.Server
	case Connected:
		str += fmt.Sprintf(" to %s (session present: %v)", s.Server, s.SessionPresent)
	case Reconnecting:
		str += fmt.Sprintf(" (attempt %d in %v)", s.Attempt, s.Delay)
	}
	if s.Err != nil {
		str += ": " + s.Err.Error()
	}
	return str
}
