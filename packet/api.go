package packet

// This file fixes the decoding API; the implementation lives in the
// per-packet files.

// FixedHeader is the first byte and remaining length of a packet.
type FixedHeader struct {
	Type      Type
	Flags     byte // low nibble of the first byte
	Remaining int  // remaining length
	HeaderLen int  // bytes taken by the first byte and the varint
}

// Error is a decode or validation failure. Code is the reason code a 5.0
// server or client answers with (MalformedPacket, ProtocolError,
// TopicNameInvalid, PacketTooLarge, ...); Rule names the normative
// statement, e.g. "MQTT-3.3.1-4", when there is one.
type Error struct {
	Code ReasonCode
	Rule string
	Msg  string
}
