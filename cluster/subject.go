package cluster

import (
	"errors"
	"strings"
)

// MQTT topic levels may hold any UTF-8 but U+0000 [MQTT-4.7.3-2], including
// the characters NATS gives a meaning to in a subject: '.' separates tokens,
// '*' and '>' are wildcards when they are a whole token, whitespace ends the
// subject on the wire, and a token may not be empty. The mapping below turns
// each MQTT level into exactly one NATS token by percent-escaping those bytes
// (and '%' itself), and an empty level into the lone token "%", which no
// escaped level can be (an escape is always '%' and two hex digits). Other
// bytes, multi-byte UTF-8 included, stay as they are, so a subject is as
// long as its topic for the usual ASCII topics. Unlike nats-server's MQTT
// layer, which refuses topics with spaces, every valid MQTT topic maps.

// escByte reports whether b must be escaped inside a NATS token.
func escByte(b byte) bool {
	return b <= ' ' || b == '.' || b == '*' || b == '>' || b == '%' || b == 0x7f
}

const hexDigits = "0123456789ABCDEF"

// appendLevel appends the NATS token for one MQTT topic level.
func appendLevel(dst []byte, level string) []byte {
	if level == "" {
		return append(dst, '%')
	}
	for i := 0; i < len(level); i++ {
		b := level[i]
		if escByte(b) {
			dst = append(dst, '%', hexDigits[b>>4], hexDigits[b&15])
			continue
		}
		dst = append(dst, b)
	}
	return dst
}

// TopicSubject returns the NATS subject for MQTT topic name, under prefix
// (a valid NATS subject of its own, without a trailing '.'; "" for none).
// It never fails: the caller passes a topic that topic.ValidName accepted.
func TopicSubject(prefix, name string) string {
	b := make([]byte, 0, len(prefix)+1+len(name)+8)
	if prefix != "" {
		b = append(b, prefix...)
		b = append(b, '.')
	}
	for {
		level, rest, more := strings.Cut(name, "/")
		b = appendLevel(b, level)
		if !more {
			break
		}
		b = append(b, '.')
		name = rest
	}
	return string(b)
}

// ErrBadSubject is returned by SubjectTopic for a subject that
// TopicSubject cannot have made.
var ErrBadSubject = errors.New("cluster: not an encoded topic subject")

// SubjectTopic is the inverse of TopicSubject: it returns the MQTT topic
// name of subject, whose first prefixTokens tokens are the prefix.
func SubjectTopic(subject string, prefixTokens int) (string, error) {
	for i := 0; i < prefixTokens; i++ {
		_, rest, ok := strings.Cut(subject, ".")
		if !ok {
			return "", ErrBadSubject
		}
		subject = rest
	}
	var b strings.Builder
	b.Grow(len(subject))
	for {
		tok, rest, more := strings.Cut(subject, ".")
		if err := decodeLevel(&b, tok); err != nil {
			return "", err
		}
		if !more {
			return b.String(), nil
		}
		b.WriteByte('/')
		subject = rest
	}
}

func decodeLevel(b *strings.Builder, tok string) error {
	if tok == "%" {
		return nil
	}
	if tok == "" {
		return ErrBadSubject
	}
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if c != '%' {
			if escByte(c) {
				return ErrBadSubject
			}
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(tok) {
			return ErrBadSubject
		}
		hi, lo := unhex(tok[i+1]), unhex(tok[i+2])
		if hi < 0 || lo < 0 {
			return ErrBadSubject
		}
		c = byte(hi<<4 | lo)
		if !escByte(c) {
			return ErrBadSubject // not canonical: one topic, one subject
		}
		b.WriteByte(c)
		i += 2
	}
	return nil
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// FilterSubjects returns the NATS subjects whose union matches what MQTT
// filter (without a "$share/group/" prefix) matches, under prefix. '+'
// becomes '*' and '#' becomes '>', and because '#' also matches its parent
// level [MQTT-4.7.1-2] "a/#" needs two subjects, "a" and "a.>" ("#" alone
// needs only ">", which matches every subject under prefix as '#' matches
// every topic).
//
// One MQTT rule has no NATS form: a filter starting with a wildcard does
// not match topics starting with '$' [MQTT-4.7.2-1], but the subjects do. A
// receiver must therefore match the topic against the MQTT filter again,
// which Roost's subscription tree does anyway.
func FilterSubjects(prefix, filter string) []string {
	b := make([]byte, 0, len(prefix)+1+len(filter)+8)
	if prefix != "" {
		b = append(b, prefix...)
		b = append(b, '.')
	}
	start := len(b)
	for {
		level, rest, more := strings.Cut(filter, "/")
		switch level {
		case "+":
			b = append(b, '*')
		case "#":
			// '#' is always last [MQTT-4.7.1-1].
			if len(b) == start {
				return []string{string(append(b, '>'))}
			}
			parent := string(b[:len(b)-1])
			return []string{parent, string(append(b, '>'))}
		default:
			b = appendLevel(b, level)
		}
		if !more {
			return []string{string(b)}
		}
		b = append(b, '.')
		filter = rest
	}
}
