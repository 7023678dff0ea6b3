// Package packet is the MQTT wire codec for protocol levels 3 (MQTT 3.1,
// "MQIsdp"), 4 (3.1.1) and 5 (5.0).
//
// There is one Go type per control packet (Connect, Connack, Publish, ...).
// Every type implements Packet: Encode appends the packet's wire form for a
// given protocol version to a caller-owned buffer, so a broker can encode a
// PUBLISH once per distinct wire form and share the bytes among subscribers.
//
// Decoding is split in two steps so the hot path does not allocate per
// packet header: ReadFixedHeader/ParseFixedHeader extracts the first byte and
// the remaining length, and Decode turns the body into a typed packet. A
// Reader wraps both around a bufio.Reader and enforces a maximum packet size.
//
// The decoder applies the validity rules the specifications state for the
// wire form itself (reserved flags, UTF-8 rules, property duplication, packet
// identifier 0, QoS 3, wildcards in a PUBLISH topic, ...). A violation is
// returned as an *Error carrying the MQTT 5 reason code the server should
// answer with (0x81 Malformed Packet or 0x82 Protocol Error, mostly), so the
// broker has one place that turns decode failures into DISCONNECTs.
//
// Decoded strings and byte slices never alias the caller's buffer. To keep
// decoding cheap they share one copy of the packet body (a PUBLISH costs two
// allocations: the *Publish and that copy), so holding on to any one field
// keeps the whole body alive. DecodePublish and DecodeConnect decode into
// a caller's value instead, so a reader that handles one packet at a time
// reuses one Publish, and a server one Connect for all its clients' CONNECTs
// (700 bytes, two property sets), leaving only that copy per packet.
// DecodePublishWith goes further for a server's reader: topic names its
// client repeats come from a small TopicCache, and the payload may stay a
// view into the caller's buffer (PublishOptions.BorrowPayload), so a
// repeated QoS 0 PUBLISH can be decoded without any allocation.
//
// Encode writes only the properties the 5.0 table (section 2.2.2.2) allows in
// that packet, so a Properties value can be passed along between packet
// types without producing a packet the peer must reject. User Property and
// Subscription Identifier are written when their slices are non-empty.
//
// The package has no broker imports and no global mutable state.
package packet
