package packet

import "fmt"

// Type is the MQTT control packet type (the high nibble of the first byte).
type Type byte

// Control packet types [MQTT-2.1.2].
const (
	CONNECT     Type = 1
	CONNACK     Type = 2
	PUBLISH     Type = 3
	PUBACK      Type = 4
	PUBREC      Type = 5
	PUBREL      Type = 6
	PUBCOMP     Type = 7
	SUBSCRIBE   Type = 8
	SUBACK      Type = 9
	UNSUBSCRIBE Type = 10
	UNSUBACK    Type = 11
	PINGREQ     Type = 12
	PINGRESP    Type = 13
	DISCONNECT  Type = 14
	AUTH        Type = 15
)

var typeNames = [...]string{"RESERVED", "CONNECT", "CONNACK", "PUBLISH", "PUBACK", "PUBREC", "PUBREL",
	"PUBCOMP", "SUBSCRIBE", "SUBACK", "UNSUBSCRIBE", "UNSUBACK", "PINGREQ", "PINGRESP", "DISCONNECT", "AUTH"}

func (t Type) String() string {
	if int(t) < len(typeNames) {
		return typeNames[t]
	}
	return fmt.Sprintf("Type(%d)", byte(t))
}

// Version is the protocol level carried in CONNECT.
type Version byte

// Protocol levels.
const (
	V31  Version = 3 // MQTT 3.1, protocol name "MQIsdp"
	V311 Version = 4 // MQTT 3.1.1
	V5   Version = 5 // MQTT 5.0
)

func (v Version) String() string {
	switch v {
	case V31:
		return "3.1"
	case V311:
		return "3.1.1"
	case V5:
		return "5.0"
	}
	return fmt.Sprintf("Version(%d)", byte(v))
}

// QoS is a quality of service level, 0, 1 or 2.
type QoS byte

// MaxVarint is the largest value a variable byte integer can carry [MQTT-1.5.5].
const MaxVarint = 268435455

// Packet is one MQTT control packet.
type Packet interface {
	// Type reports the control packet type.
	Type() Type
	// Encode appends the packet's complete wire form (fixed header included)
	// for protocol version v to dst. Fields the version does not carry
	// (properties and reason codes before 5.0) are left out. It returns an
	// error only when the packet cannot be represented, e.g. a remaining
	// length above MaxVarint.
	Encode(dst []byte, v Version) ([]byte, error)
}

// Connect is the CONNECT packet [MQTT-3.1].
type Connect struct {
	ProtocolName    string  // "MQTT", or "MQIsdp" for 3.1
	ProtocolVersion Version // the protocol level byte as received, without the bridge bit
	// Bridge is the bridge bit (0x80) of a 3.1 or 3.1.1 protocol level:
	// mosquitto's try_private, by which a bridge announces itself so the
	// server can keep it from receiving its own messages back. Not part of
	// the OASIS specifications; never set for 5.0 (0x85 is refused).
	Bridge     bool
	CleanStart bool   // Clean Session in 3.1.x
	KeepAlive  uint16 // seconds
	ClientID   string
	Properties Properties // 5.0 only

	WillFlag       bool
	WillQoS        QoS
	WillRetain     bool
	WillTopic      string
	WillPayload    []byte
	WillProperties Properties // 5.0 only

	UsernameFlag bool
	Username     string
	PasswordFlag bool
	Password     []byte
}

// Connack is the CONNACK packet [MQTT-3.2]. ReasonCode holds the 3.1.x
// return code (0..5) when encoding for 3.1.x and the 5.0 reason code for 5.0;
// ConnackCode311 maps a 5.0 code to the nearest 3.1.1 return code.
type Connack struct {
	SessionPresent bool
	ReasonCode     ReasonCode
	Properties     Properties
}

// Publish is the PUBLISH packet [MQTT-3.3]. Payload and Topic are owned by
// the packet: the decoder copies them out of its read buffer.
type Publish struct {
	Dup        bool
	QoS        QoS
	Retain     bool
	Topic      string // may be empty in 5.0 when a Topic Alias is set
	PacketID   uint16 // 0 for QoS 0
	Properties Properties
	Payload    []byte
}

// Puback, Pubrec, Pubrel and Pubcomp acknowledge a PUBLISH [MQTT-3.4..3.7].
// In 5.0 the reason code and properties are omitted from the wire when the
// code is Success and there are no properties [MQTT-3.4.2.1].
type Puback struct {
	PacketID   uint16
	ReasonCode ReasonCode
	Properties Properties
}

// Pubrec is the PUBREC packet, see Puback.
type Pubrec struct {
	PacketID   uint16
	ReasonCode ReasonCode
	Properties Properties
}

// Pubrel is the PUBREL packet, see Puback. Its fixed header flags are 0b0010.
type Pubrel struct {
	PacketID   uint16
	ReasonCode ReasonCode
	Properties Properties
}

// Pubcomp is the PUBCOMP packet, see Puback.
type Pubcomp struct {
	PacketID   uint16
	ReasonCode ReasonCode
	Properties Properties
}

// SubOptions are the per-filter subscription options [MQTT-3.8.3.1]. In
// 3.1.x only QoS is carried.
type SubOptions struct {
	QoS               QoS
	NoLocal           bool
	RetainAsPublished bool
	RetainHandling    byte // 0, 1 or 2
}

// Subscription is one topic filter with its options in a SUBSCRIBE.
type Subscription struct {
	Filter  string
	Options SubOptions
}

// Subscribe is the SUBSCRIBE packet [MQTT-3.8].
type Subscribe struct {
	PacketID      uint16
	Properties    Properties // Subscription Identifier, User Property
	Subscriptions []Subscription
}

// Suback is the SUBACK packet [MQTT-3.9]. ReasonCodes hold granted QoS
// (0,1,2) or a failure code (0x80 in 3.1.1, any 5.0 failure code in 5.0;
// when encoding for 3.1.x any code >= 0x80 is written as 0x80).
type Suback struct {
	PacketID    uint16
	Properties  Properties
	ReasonCodes []ReasonCode
}

// Unsubscribe is the UNSUBSCRIBE packet [MQTT-3.10].
type Unsubscribe struct {
	PacketID   uint16
	Properties Properties
	Filters    []string
}

// Unsuback is the UNSUBACK packet [MQTT-3.11]. ReasonCodes are written only
// for 5.0.
type Unsuback struct {
	PacketID    uint16
	Properties  Properties
	ReasonCodes []ReasonCode
}

// Pingreq is the PINGREQ packet [MQTT-3.12].
type Pingreq struct{}

// Pingresp is the PINGRESP packet [MQTT-3.13].
type Pingresp struct{}

// Disconnect is the DISCONNECT packet [MQTT-3.14]. Reason code and
// properties exist only in 5.0; a 5.0 DISCONNECT with Normal disconnection
// and no properties is encoded as the two-byte form.
type Disconnect struct {
	ReasonCode ReasonCode
	Properties Properties
}

// Auth is the AUTH packet, 5.0 only [MQTT-3.15].
type Auth struct {
	ReasonCode ReasonCode
	Properties Properties
}

func (*Connect) Type() Type     { return CONNECT }
func (*Connack) Type() Type     { return CONNACK }
func (*Publish) Type() Type     { return PUBLISH }
func (*Puback) Type() Type      { return PUBACK }
func (*Pubrec) Type() Type      { return PUBREC }
func (*Pubrel) Type() Type      { return PUBREL }
func (*Pubcomp) Type() Type     { return PUBCOMP }
func (*Subscribe) Type() Type   { return SUBSCRIBE }
func (*Suback) Type() Type      { return SUBACK }
func (*Unsubscribe) Type() Type { return UNSUBSCRIBE }
func (*Unsuback) Type() Type    { return UNSUBACK }
func (*Pingreq) Type() Type     { return PINGREQ }
func (*Pingresp) Type() Type    { return PINGRESP }
func (*Disconnect) Type() Type  { return DISCONNECT }
func (*Auth) Type() Type        { return AUTH }
