package client

import (
	"errors"
	"fmt"

	"github.com/roost-mqtt/roost/packet"
)

var (
	// ErrClosed is returned by calls on a Client that has been
	// disconnected or has given up reconnecting, and by calls that were
	// still waiting when that happened.
	ErrClosed = errors.New("client: closed")
	// ErrQueueFull is returned when Options.OfflineQueue operations are
	// already waiting.
	ErrQueueFull = errors.New("client: offline queue full")
	// ErrPacketTooLarge is returned by Publish when the PUBLISH exceeds the
	// server's Maximum Packet Size.
	ErrPacketTooLarge = errors.New("client: packet exceeds the server's Maximum Packet Size")
	// ErrV5Only is returned by MQTT 5 features used on a 3.1.1 client.
	ErrV5Only = errors.New("client: needs MQTT 5")
	// ErrPingTimeout is the reason a connection is lost when PINGRESP does
	// not arrive within Options.PingTimeout.
	ErrPingTimeout = errors.New("client: keep alive timeout: no PINGRESP")
)

// ReasonError is a failure reason code (>= 0x80, or a non-zero 3.1.1
// CONNACK return code) sent by the server for an operation.
type ReasonError struct {
	Op     string            // "connect", "publish", "subscribe", "unsubscribe", "disconnect"
	Code   packet.ReasonCode // as received
	Reason string            // MQTT 5 Reason String, if any
	V311   bool              // Code is a 3.1.1 CONNACK return code
}

func (e *ReasonError) Error() string {
	code := e.Code.String()
	if e.V311 {
		code = connack311Text(e.Code)
	}
	s := fmt.Sprintf("client: %s: %s (0x%02X)", e.Op, code, byte(e.Code))
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

func connack311Text(c packet.ReasonCode) string {
	switch c {
	case packet.Connack311BadProtocolVersion:
		return "unacceptable protocol version"
	case packet.Connack311IdentifierRejected:
		return "identifier rejected"
	case packet.Connack311ServerUnavailable:
		return "server unavailable"
	case packet.Connack311BadUsernameOrPassword:
		return "bad user name or password"
	case packet.Connack311NotAuthorized:
		return "not authorized"
	}
	return fmt.Sprintf("return code %d", byte(c))
}

// permanent reports whether a connect failure will not go away by retrying
// the same server soon: the server refused these credentials or protocol.
func permanent(err error) bool {
	var re *ReasonError
	if !errors.As(err, &re) || re.Op != "connect" {
		return false
	}
	if re.V311 {
		return re.Code != packet.Connack311ServerUnavailable
	}
	switch re.Code {
	case packet.ServerUnavailable, packet.ServerBusy, packet.ConnectionRateExceeded,
		packet.UseAnotherServer, packet.ServerMoved, packet.QuotaExceeded:
		return false
	}
	return true
}

var errNoResponseTopic = errors.New("client: respond: request has no Response Topic")
