package packet

import (
	"errors"
	"fmt"
)

// ErrIncomplete is returned by ParseFixedHeader when b does not yet hold
// the whole fixed header; the caller reads more bytes and tries again.
var ErrIncomplete = errors.New("packet: incomplete fixed header")

// Error formats the failure as "packet: <reason>: <msg> [<rule>]".
func (e *Error) Error() string {
	s := "packet: " + e.Code.String()
	if e.Msg != "" {
		s += ": " + e.Msg
	}
	if e.Rule != "" {
		s += " [" + e.Rule + "]"
	}
	return s
}

// malformed returns an *Error with code MalformedPacket.
func malformed(rule, format string, args ...any) *Error {
	return newError(MalformedPacket, rule, format, args...)
}

// protocolErr returns an *Error with code ProtocolError.
func protocolErr(rule, format string, args ...any) *Error {
	return newError(ProtocolError, rule, format, args...)
}

func newError(code ReasonCode, rule, format string, args ...any) *Error {
	msg := format
	if len(args) > 0 {
		msg = fmt.Sprintf(format, args...)
	}
	return &Error{Code: code, Rule: rule, Msg: msg}
}

// errShort is the error for a body that ends before a field it announces.
func errShort(what string) *Error {
	return malformed("", "%s: packet too short", what)
}

// errEncode is returned by Encode for a packet the wire cannot carry.
func errEncode(t Type, why string) error {
	return fmt.Errorf("packet: cannot encode %v: %s", t, why)
}
