package hostile

import (
	"github.com/roost-mqtt/roost/broker"
	rc "github.com/roost-mqtt/roost/internal/rawclient"
)

// 5.0 reason codes used below [MQTT-2.4].
const (
	malformed      = 0x81
	protocolError  = 0x82
	clientIDBad    = 0x85
	filterInvalid  = 0x8F
	topicInvalid   = 0x90
	pidNotFound    = 0x92
	recvMaxExceed  = 0x93
	packetTooLarge = 0x95
)

// connect4 frames a 3.1.1 CONNECT with the given flags byte and payload
// fields, keep alive 60 [MQTT-3.1.2].
func connect4(flags byte, payload ...[]byte) []byte {
	return rc.Frame(0x10,
		rc.Str("MQTT"),     // protocol name
		[]byte{4, flags},   // level 4, connect flags
		rc.U16(60),         // keep alive
		rc.Cat(payload...)) // client id, will, username, password
}

// connect5 frames a 5.0 CONNECT with the given flags, encoded properties
// (without their length) and payload fields.
func connect5(flags byte, props []byte, payload ...[]byte) []byte {
	return rc.Frame(0x10,
		rc.Str("MQTT"),     // protocol name
		[]byte{5, flags},   // level 5, connect flags
		rc.U16(60),         // keep alive
		rc.Props(props),    // properties
		rc.Cat(payload...)) // client id, will properties, will, username, password
}

// connectV frames a CONNECT for level v; props are ignored for 4.
func connectV(v, flags byte, props []byte, payload ...[]byte) []byte {
	if v == 5 {
		return connect5(flags, props, payload...)
	}
	return connect4(flags, payload...)
}

// willV is the will part of a CONNECT payload: 5.0 will properties
// (empty), topic and payload.
func willV(v byte, topic, msg string) []byte {
	if v == 5 {
		return rc.Cat([]byte{0x00}, rc.Str(topic), rc.Str(msg))
	}
	return rc.Cat(rc.Str(topic), rc.Str(msg))
}

// propsV is an empty property block in 5.0 and nothing in 3.1.1.
func propsV(v byte) []byte {
	if v == 5 {
		return []byte{0x00}
	}
	return nil
}

// malformedConnect is the reaction to a CONNECT that breaks the format of
// section 3.1: 3.1.1 closes without CONNACK [MQTT-3.1.4-1]; 5.0 closes, and
// may first send a CONNACK with a code of 0x80 or more [MQTT-3.1.4-1]
// (section 4.13), here the one the specification names.
func malformedConnect(v byte, codes ...byte) reaction {
	if v == 4 {
		return silentClose()
	}
	return closedMaybeConnack(codes...)
}

// corpus returns every case, for both versions where the rule applies to
// both.
func corpus() []hostileCase {
	var cs []hostileCase
	for _, v := range []byte{4, 5} {
		cs = append(cs, connectCases(v)...)
		cs = append(cs, sequenceCases(v)...)
		cs = append(cs, packetCases(v)...)
	}
	cs = append(cs, v5Cases()...)
	return cs
}

// connectCases break the CONNECT packet itself.
func connectCases(v byte) []hostileCase {
	id := rc.Str("hostile")
	rule := func(r311, r5 string) string {
		if v == 5 {
			return r5
		}
		return r311
	}
	return []hostileCase{
		{name: "will_qos_3", v: v, rule: rule("MQTT-3.1.2-14", "MQTT-3.1.2-12"),
			// will flag, will QoS 3 (bits 3-4 = 11), clean start
			bytes: connectV(v, 0x04|0x18|0x02, nil, id, willV(v, "w", "x")),
			want:  malformedConnect(v, malformed)},
		{name: "will_flag_0_will_qos_1", v: v, rule: rule("MQTT-3.1.2-13", "MQTT-3.1.2-11"),
			// no will flag, but will QoS 1
			bytes: connectV(v, 0x08|0x02, nil, id),
			want:  malformedConnect(v, malformed)},
		{name: "will_flag_0_will_retain", v: v, rule: rule("MQTT-3.1.2-15", "MQTT-3.1.2-13"),
			// no will flag, but will retain
			bytes: connectV(v, 0x20|0x02, nil, id),
			want:  malformedConnect(v, malformed)},
		{name: "username_flag_without_username", v: v, rule: rule("MQTT-3.1.2-19", "MQTT-3.1.2-17"),
			// username flag set, payload ends after the client id
			bytes: connectV(v, 0x80|0x02, nil, id),
			want:  malformedConnect(v, malformed)},
		{name: "username_without_flag", v: v, rule: rule("MQTT-3.1.2-18", "MQTT-3.1.2-16"),
			// no username flag, yet a username follows the client id
			bytes: connectV(v, 0x02, nil, id, rc.Str("eve")),
			want:  malformedConnect(v, malformed)},
		{name: "password_flag_without_password", v: v, rule: rule("MQTT-3.1.2-21", "MQTT-3.1.2-19"),
			// username and password flags, only a username present
			bytes: connectV(v, 0xC0|0x02, nil, id, rc.Str("eve")),
			want:  malformedConnect(v, malformed)},
		{name: "client_id_invalid_utf8", v: v, rule: rule("MQTT-1.5.3-1", "MQTT-1.5.4-1"),
			// client id "a\xFF": not UTF-8. 3.1.1 may instead reject the id
			// with CONNACK 0x02 [MQTT-3.1.3-9].
			bytes: connectV(v, 0x02, nil, rc.Str("a\xFF")),
			want:  closedMaybeConnack(map[byte][]byte{4: {0x02}, 5: {malformed, clientIDBad}}[v]...)},
		{name: "username_invalid_utf8", v: v, rule: rule("MQTT-3.1.3-11", "MQTT-3.1.3-12"),
			// username "e\xED\xA0\x80": a UTF-16 surrogate in UTF-8
			bytes: connectV(v, 0x80|0x02, nil, id, rc.Str("e\xED\xA0\x80")),
			want:  malformedConnect(v, malformed)},
		{name: "will_topic_wildcard", v: v, rule: "MQTT-3.3.2-2 (the will becomes a PUBLISH; 5.0 section 3.1.3.3)",
			// will topic "a/#"; 5.0 names 0x90 Topic Name invalid
			bytes: connectV(v, 0x04|0x02, nil, id, willV(v, "a/#", "x")),
			want:  map[byte]reaction{4: closedMaybeConnack(0x03), 5: refused(topicInvalid)}[v]},
		{name: "will_topic_null_char", v: v, rule: rule("MQTT-1.5.3-2", "MQTT-1.5.4-2"),
			// will topic "a\x00"
			bytes: connectV(v, 0x04|0x02, nil, id, willV(v, "a\x00", "x")),
			want:  malformedConnect(v, malformed, topicInvalid)},
		{name: "protocol_name_length_beyond_packet", v: v, rule: "MQTT-3.1.4-1",
			// protocol name length 0xFFFF in a 12-byte packet
			bytes: rc.Frame(0x10, []byte{0xFF, 0xFF}, []byte("MQTT"), []byte{v, 0x02}, rc.U16(60), propsV(v)),
			want:  silentClose()},
		{name: "payload_field_beyond_packet", v: v, rule: rule("MQTT-3.1.4-1", "MQTT-3.1.4-1 (section 1.5.4)"),
			// the client id claims 200 bytes, 3 follow
			bytes: connectV(v, 0x02, nil, rc.U16(200), []byte("abc")),
			want:  malformedConnect(v, malformed)},
		{name: "huge_length_no_body", v: v, rule: "MQTT-3.1.4-1 (Roost: Options.MaxPacketSize before the body)",
			// a CONNECT claiming 268,435,455 bytes; nothing follows. The
			// broker must close without waiting for (or allocating) it;
			// 5.0 may answer 0x95 Packet too large first.
			bytes: []byte{0x10, 0xFF, 0xFF, 0xFF, 0x7F},
			want:  closedMaybeConnack(packetTooLarge)},
		{name: "remaining_length_five_bytes", v: v, rule: "section 1.5.5 (at most four bytes)",
			// four continuation bytes, then a fifth
			bytes: []byte{0x10, 0x80, 0x80, 0x80, 0x80, 0x01},
			want:  closedMaybeConnack(malformed)},
	}
}

// sequenceCases put several packets, good and bad, in one segment.
func sequenceCases(v byte) []hostileCase {
	pub0 := rc.Publish{Version: v, Topic: "a", Payload: []byte("x")}.Bytes()
	return []hostileCase{
		{name: "publish_then_connect", v: v, rule: "MQTT-3.1.0-1",
			// a PUBLISH before CONNECT, then a good CONNECT in the same
			// segment: the CONNECT must not be processed
			bytes: rc.Cat(pub0, goodConnect(v, "after-publish")),
			want:  silentClose()},
		{name: "pingreq_before_connect", v: v, rule: "MQTT-3.1.0-1",
			bytes: []byte{0xC0, 0x00}, // PINGREQ: no PINGRESP, closed
			want:  silentClose()},
		{name: "reserved_type_0_before_connect", v: v, rule: "MQTT-3.1.0-1 (section 2.1.2: type 0 is reserved)",
			bytes: []byte{0x00, 0x00},
			want:  silentClose()},
		{name: "connect_then_reserved_type", v: v, rule: rule2(v, "MQTT-2.2.2-2 (section 2.2.1: type 0 forbidden)", "section 2.1.2: type 0 forbidden"),
			// a good CONNECT and a type-0 packet in one segment: CONNACK,
			// then the connection is closed
			bytes: rc.Cat(goodConnect(v, "then-reserved"), []byte{0x00, 0x00}),
			want:  reaction{connack: []byte{0}, disconnect: []byte{malformed, protocolError}}},
		{name: "subscribe_then_second_connect", v: v, connected: true, rule: "MQTT-3.1.0-2",
			// a SUBSCRIBE (answered) then a second CONNECT (protocol
			// error) in one segment
			bytes: rc.Cat(rc.Subscribe(v, 1, nil, rc.Sub{Filter: "s", Opts: 0}), goodConnect(v, "again")),
			want:  reaction{replies: []reply{{0x90, nil}}, disconnect: []byte{protocolError}}},
		{name: "qos2_window_exceeded", v: v, connected: true, rule: "section 4.9 (5.0 section 3.3.4: more than Receive Maximum is 0x93)",
			opts: func(o *broker.Options) { o.ReceiveMaximum = 3 },
			// four QoS 2 PUBLISHes never released, Receive Maximum 3:
			// three PUBRECs, then the connection is closed
			bytes: rc.Cat(
				rc.Publish{Version: v, QoS: 2, ID: 1, Topic: "q"}.Bytes(),
				rc.Publish{Version: v, QoS: 2, ID: 2, Topic: "q"}.Bytes(),
				rc.Publish{Version: v, QoS: 2, ID: 3, Topic: "q"}.Bytes(),
				rc.Publish{Version: v, QoS: 2, ID: 4, Topic: "q"}.Bytes()),
			want: reaction{replies: []reply{{0x50, nil}, {0x50, nil}, {0x50, nil}}, disconnect: []byte{recvMaxExceed}}},
		{name: "qos2_same_id_repeated", v: v, connected: true, rule: "MQTT-4.3.3-9 (5.0 MQTT-4.3.3-10)",
			opts: func(o *broker.Options) { o.ReceiveMaximum = 3 },
			// the same unreleased QoS 2 packet id five times is one
			// message, not five: five PUBRECs and the connection stays open
			bytes: rc.Cat(
				rc.Publish{Version: v, QoS: 2, ID: 7, Topic: "q"}.Bytes(),
				rc.Publish{Version: v, QoS: 2, ID: 7, Dup: true, Topic: "q"}.Bytes(),
				rc.Publish{Version: v, QoS: 2, ID: 7, Dup: true, Topic: "q"}.Bytes(),
				rc.Publish{Version: v, QoS: 2, ID: 7, Dup: true, Topic: "q"}.Bytes(),
				rc.Publish{Version: v, QoS: 2, ID: 7, Dup: true, Topic: "q"}.Bytes()),
			want: answered(reply{0x50, nil}, reply{0x50, nil}, reply{0x50, nil}, reply{0x50, nil}, reply{0x50, nil})},
		{name: "publish_huge_length_no_body", v: v, connected: true, rule: "5.0 section 3.2.2.3.6 (Roost: Options.MaxPacketSize)",
			opts: func(o *broker.Options) { o.MaxPacketSize = 1024 },
			// a PUBLISH header claiming 268,435,455 bytes; no body follows:
			// closed at once, 5.0 with 0x95 Packet too large
			bytes: []byte{0x30, 0xFF, 0xFF, 0xFF, 0x7F},
			want:  disconnected(packetTooLarge)},
	}
}

func rule2(v byte, r311, r5 string) string {
	if v == 5 {
		return r5
	}
	return r311
}

// packetCases break packets after a successful CONNECT.
func packetCases(v byte) []hostileCase {
	p := propsV(v)
	ackBody := func(id byte, code byte) []byte {
		if v == 5 && code != 0 {
			return []byte{0, id, code}
		}
		return []byte{0, id}
	}
	cs := []hostileCase{
		{name: "connack_from_client", v: v, rule: "section 2.1.2 (CONNACK flows server to client only)",
			bytes: []byte{0x20, 0x02, 0x00, 0x00},
			want:  disconnected(protocolError, malformed)},
		{name: "suback_from_client", v: v, rule: "section 2.1.2 (SUBACK flows server to client only)",
			bytes: rc.Frame(0x90, []byte{0x00, 0x01}, p, []byte{0x00}),
			want:  disconnected(protocolError, malformed)},
		{name: "pingresp_from_client", v: v, rule: "section 2.1.2 (PINGRESP flows server to client only)",
			bytes: []byte{0xD0, 0x00},
			want:  disconnected(protocolError, malformed)},
		{name: "publish_qos0_dup", v: v, rule: "MQTT-3.3.1-2",
			// DUP set on a QoS 0 PUBLISH
			bytes: rc.Frame(0x38, rc.Str("a"), p, []byte("x")),
			want:  disconnected(malformed)},
		{name: "publish_topic_beyond_packet", v: v, rule: rule2(v, "MQTT-1.5.3 (section 1.5.3)", "section 1.5.4"),
			// topic length 16, two bytes follow
			bytes: rc.Frame(0x30, []byte{0x00, 0x10}, []byte("ab")),
			want:  disconnected(malformed)},
		{name: "publish_qos1_truncated_packet_id", v: v, rule: "section 3.3.2.2",
			// QoS 1, topic "a", one byte of packet identifier
			bytes: rc.Frame(0x32, rc.Str("a"), []byte{0x01}),
			want:  disconnected(malformed)},
		{name: "pingreq_with_body", v: v, rule: "section 3.12 (no variable header or payload)",
			bytes: []byte{0xC0, 0x01, 0x00},
			want:  disconnected(malformed)},
		{name: "puback_truncated", v: v, rule: "section 3.4.2",
			bytes: []byte{0x40, 0x01, 0x00},
			want:  disconnected(malformed)},
		{name: "disconnect_reserved_flags", v: v, rule: rule2(v, "MQTT-2.2.2-2", "MQTT-2.1.3-1"),
			bytes: []byte{0xE1, 0x00},
			want:  disconnected(malformed)},
		{name: "subscribe_qos_3", v: v, rule: rule2(v, "MQTT-3.8.3-4", "section 3.8.3.1 (QoS 3 is a Protocol Error)"),
			bytes: rc.Subscribe(v, 1, nil, rc.Sub{Filter: "a", Opts: 0x03}),
			want:  disconnected(malformed, protocolError)},
		{name: "subscribe_reserved_option_bits", v: v, rule: rule2(v, "MQTT-3.8.3-4", "MQTT-3.8.3-5"),
			bytes: rc.Subscribe(v, 1, nil, rc.Sub{Filter: "a", Opts: 0xC0}),
			want:  disconnected(malformed)},
		{name: "subscribe_missing_options", v: v, rule: "section 3.8.3 (each filter is followed by its options byte)",
			bytes: rc.Frame(0x82, []byte{0x00, 0x01}, p, rc.Str("a")),
			want:  disconnected(malformed, protocolError)},
		{name: "subscribe_filter_beyond_packet", v: v, rule: "section 1.5.4",
			bytes: rc.Frame(0x82, []byte{0x00, 0x01}, p, []byte{0x00, 0x40, 'a', 0x00}),
			want:  disconnected(malformed)},
		{name: "unsubscribe_no_filters", v: v, rule: rule2(v, "MQTT-3.10.3-2", "MQTT-3.10.3-2"),
			bytes: rc.Frame(0xA2, []byte{0x00, 0x01}, p),
			want:  disconnected(malformed, protocolError)},
		{name: "pubrel_unknown_id", v: v, rule: rule2(v, "MQTT-4.3.3-1 (PUBCOMP answers every PUBREL)", "MQTT-4.3.3-11 and section 3.7.2.1 (0x92)"),
			bytes: []byte{0x62, 0x02, 0x00, 0x07},
			want:  answered(reply{0x70, ackBody(7, pidNotFound)})},
		{name: "puback_unknown_id", v: v, rule: "section 4.3.2 (an acknowledgement for nothing is ignored)",
			bytes: []byte{0x40, 0x02, 0x00, 0x09},
			want:  ignored()},
		{name: "pubrec_pubcomp_unknown_id", v: v, rule: "section 4.3.3",
			// PUBCOMP for nothing is ignored; PUBREC for nothing gets at
			// most a PUBREL (5.0 with 0x92)
			bytes: []byte{0x70, 0x02, 0x00, 0x09},
			want:  ignored()},
		{name: "many_packets_one_segment", v: v, rule: "MQTT-4.6.0-2 (5.0 MQTT-4.6.0-2: PUBACKs in the order the PUBLISHes came)",
			// 200 QoS 1 PUBLISHes in one write: 200 PUBACKs, in order
			bytes: manyPublishes(v, 200),
			want:  answered(pubacks(v, 200)...)},
	}
	for i := range cs {
		cs[i].connected = true
	}
	return cs
}

func manyPublishes(v byte, n int) []byte {
	var b []byte
	for i := range n {
		b = append(b, rc.Publish{Version: v, QoS: 1, ID: uint16(i + 1), Topic: "m", Payload: []byte("x")}.Bytes()...)
	}
	return b
}

// pubacks are the acknowledgements of manyPublishes: 5.0 says 0x10 No
// matching subscribers.
func pubacks(v byte, n int) []reply {
	rs := make([]reply, n)
	for i := range rs {
		rs[i] = reply{0x40, rc.U16(uint16(i + 1))}
		if v == 5 {
			rs[i].body = append(rs[i].body, 0x10)
		}
	}
	return rs
}

// v5Cases are properties and other 5.0-only rules.
func v5Cases() []hostileCase {
	const v = 5
	id := rc.Str("hostile")
	pubWith := func(props ...[]byte) []byte {
		return rc.Frame(0x30, rc.Str("a"), rc.Props(props...), []byte("x"))
	}
	return []hostileCase{
		{name: "password_without_username", v: v, rule: "section 3.1.2.9 (5.0 allows it; 3.1.1 forbade it in MQTT-3.1.2-22)",
			bytes: connect5(0x40|0x02, nil, id, rc.Str("pw")),
			want:  accepted()},
		{name: "client_id_null_char", v: v, rule: "MQTT-1.5.4-2",
			bytes: connect5(0x02, nil, rc.Str("a\x00b")),
			want:  closedMaybeConnack(malformed, clientIDBad)},
		{name: "connect_property_duplicated", v: v, rule: "section 3.1.2.11.2 (Session Expiry Interval twice is a Protocol Error)",
			bytes: connect5(0x02, rc.Cat(rc.PropU32(rc.PropSessionExpiry, 10), rc.PropU32(rc.PropSessionExpiry, 20)), id),
			want:  closedMaybeConnack(protocolError)},
		{name: "auth_data_without_method", v: v, rule: "section 3.1.2.11.10 (Authentication Data without Method is a Protocol Error)",
			bytes: connect5(0x02, rc.PropStr(rc.PropAuthData, "x"), id),
			want:  closedMaybeConnack(protocolError)},
		{name: "topic_alias_maximum_duplicated", v: v, rule: "section 3.1.2.11.5",
			bytes: connect5(0x02, rc.Cat(rc.PropU16(rc.PropTopicAliasMaximum, 1), rc.PropU16(rc.PropTopicAliasMaximum, 2)), id),
			want:  closedMaybeConnack(protocolError)},
		{name: "will_props_with_session_expiry", v: v, rule: "section 2.2.2.2 (a property not valid where it is is a Malformed Packet)",
			bytes: connect5(0x04|0x02, nil, id, rc.Props(rc.PropU32(rc.PropSessionExpiry, 1)), rc.Str("w"), rc.Str("x")),
			want:  closedMaybeConnack(malformed, protocolError)},
		{name: "connect_property_length_huge", v: v, rule: "section 2.2.2.1",
			// property length 268,435,455 in a small packet
			bytes: rc.Frame(0x10, rc.Str("MQTT"), []byte{5, 0x02}, rc.U16(60), []byte{0xFF, 0xFF, 0xFF, 0x7F}, id),
			want:  closedMaybeConnack(malformed)},
		{name: "user_property_beyond_block", v: v, rule: "section 2.2.2.1",
			// a 5-byte property block whose User Property key claims 16 bytes
			bytes: rc.Frame(0x10, rc.Str("MQTT"), []byte{5, 0x02}, rc.U16(60), []byte{0x05, 0x26, 0x00, 0x10, 'k', 'k'}, id),
			want:  closedMaybeConnack(malformed)},
		{name: "auth_before_connect", v: v, rule: "MQTT-3.1.0-1",
			bytes: []byte{0xF0, 0x00},
			want:  silentClose()},
		{name: "auth_continue_without_method", v: v, connected: true, rule: "section 4.12 (AUTH when CONNECT had no Authentication Method is a Protocol Error)",
			// AUTH 0x18 Continue authentication, method "x"
			bytes: rc.Frame(0xF0, []byte{0x18}, rc.Props(rc.PropStr(rc.PropAuthMethod, "x"))),
			want:  disconnected(protocolError)},
		{name: "publish_subscription_identifier", v: v, connected: true, rule: "MQTT-3.3.4-6",
			bytes: pubWith(rc.PropVarInt(rc.PropSubscriptionID, 1)),
			want:  disconnected(protocolError, malformed)},
		{name: "publish_property_duplicated", v: v, connected: true, rule: "section 3.3.2.3.2 (Payload Format Indicator twice is a Protocol Error)",
			bytes: pubWith([]byte{rc.PropPayloadFormat, 0}, []byte{rc.PropPayloadFormat, 0}),
			want:  disconnected(protocolError)},
		{name: "publish_property_length_huge", v: v, connected: true, rule: "section 2.2.2.1",
			bytes: rc.Frame(0x30, rc.Str("a"), []byte{0xFF, 0xFF, 0xFF, 0x7F}, []byte("x")),
			want:  disconnected(malformed)},
		{name: "publish_property_length_five_bytes", v: v, connected: true, rule: "section 1.5.5",
			bytes: rc.Frame(0x30, rc.Str("a"), []byte{0x80, 0x80, 0x80, 0x80, 0x01}),
			want:  disconnected(malformed)},
		{name: "publish_response_topic_wildcard", v: v, connected: true, rule: "MQTT-3.3.2-14",
			bytes: pubWith(rc.PropStr(rc.PropResponseTopic, "reply/#")),
			want:  disconnected(protocolError, malformed, topicInvalid)},
		{name: "subscribe_retain_handling_3", v: v, connected: true, rule: "section 3.8.3.1 (Retain Handling 3 is a Protocol Error)",
			bytes: rc.Subscribe(v, 1, nil, rc.Sub{Filter: "a", Opts: 0x30}),
			want:  disconnected(protocolError, malformed)},
		{name: "subscribe_subscription_identifier_0", v: v, connected: true, rule: "section 3.8.2.1.2 (0 is a Protocol Error)",
			bytes: rc.Subscribe(v, 1, rc.PropVarInt(rc.PropSubscriptionID, 0), rc.Sub{Filter: "a"}),
			want:  disconnected(protocolError, malformed)},
		{name: "subscribe_two_subscription_identifiers", v: v, connected: true, rule: "section 3.8.2.1.2 (more than one is a Protocol Error)",
			bytes: rc.Subscribe(v, 1, rc.Cat(rc.PropVarInt(rc.PropSubscriptionID, 1), rc.PropVarInt(rc.PropSubscriptionID, 2)), rc.Sub{Filter: "a"}),
			want:  disconnected(protocolError, malformed)},
		{name: "shared_subscription_empty_share_name", v: v, connected: true, rule: "MQTT-4.8.2-1",
			bytes: rc.Subscribe(v, 1, nil, rc.Sub{Filter: "$share//a"}),
			want:  answered(reply{0x90, []byte{0x00, 0x01, 0x00, filterInvalid}})},
		{name: "shared_subscription_wildcard_share_name", v: v, connected: true, rule: "MQTT-4.8.2-2",
			bytes: rc.Subscribe(v, 1, nil, rc.Sub{Filter: "$share/g+/a"}),
			want:  answered(reply{0x90, []byte{0x00, 0x01, 0x00, filterInvalid}})},
		{name: "shared_subscription_no_filter", v: v, connected: true, rule: "MQTT-4.8.2-1 (a filter follows the share name)",
			bytes: rc.Subscribe(v, 1, nil, rc.Sub{Filter: "$share/g"}),
			want:  answered(reply{0x90, []byte{0x00, 0x01, 0x00, filterInvalid}})},
		{name: "disconnect_property_length_beyond", v: v, connected: true, rule: "section 2.2.2.1",
			// DISCONNECT 0x00 with a property length of 127 and nothing after
			bytes: []byte{0xE0, 0x02, 0x00, 0x7F},
			want:  disconnected(malformed)},
	}
}
