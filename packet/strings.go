package packet

import (
	"bytes"
	"strings"
	"unicode/utf8"
)

// ValidString reports whether s may travel as an MQTT UTF-8 Encoded String:
// well-formed UTF-8 [MQTT-1.5.4-1] (which in Go also excludes the surrogates
// U+D800..U+DFFF) without U+0000 [MQTT-1.5.4-2], and at most 65,535 bytes.
// The decoder rejects strings that fail it with MalformedPacket.
func ValidString(s string) bool {
	return len(s) <= 0xFFFF && utf8.ValidString(s) && strings.IndexByte(s, 0) < 0
}

// validBytes is ValidString for a byte slice, without converting it.
func validBytes(b []byte) bool {
	return utf8.Valid(b) && bytes.IndexByte(b, 0) < 0
}

// hasWildcard reports whether a topic name contains + or # [MQTT-3.3.2-2].
func hasWildcard(s string) bool {
	return strings.ContainsAny(s, "+#")
}
