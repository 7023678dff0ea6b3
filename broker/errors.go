package broker

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"syscall"
	"unicode/utf8"

	"github.com/roost-mqtt/roost/packet"
)

var (
	errTooManyFiles = syscall.EMFILE
	errServer       = errors.New("internal server error")
	// errUnconfirmed: the cluster did not confirm a QoS 2 publish in
	// time. Its outcome is unknown (the other nodes may still deliver
	// it), so it is neither acknowledged nor refused: the connection
	// ends with DISCONNECT 0x80 and unconfirmedWhy (see storeFailed).
	errUnconfirmed = errors.New("publish not confirmed by the cluster in time")
	errKicked      = errors.New("closed by the server")

	// errNormalDisconnect and errWillDisconnect end the read loop after a
	// client DISCONNECT (0x00 and 0x04).
	errNormalDisconnect = errors.New("client sent DISCONNECT")
	errWillDisconnect   = errors.New("client sent DISCONNECT with will (0x04)")
)

// protocolError is a violation found while handling a decoded packet. It
// carries the reason code for the DISCONNECT and the normative statement.
type protocolError struct {
	code packet.ReasonCode
	rule string
	msg  string
}

func (e *protocolError) Error() string {
	if e.rule != "" {
		return fmt.Sprintf("%s [%s]", e.msg, e.rule)
	}
	return e.msg
}

func protoErr(code packet.ReasonCode, rule, format string, args ...any) error {
	return &protocolError{code: code, rule: rule, msg: fmt.Sprintf(format, args...)}
}

// maxQuoted is how much of a client's string (a topic, say) an error
// message quotes: a topic may be 65,535 bytes, and a Reason String that
// quotes it whole cannot be encoded, so the DISCONNECT saying why would be
// lost (section 4.13).
const maxQuoted = 100

// clipQuote quotes s for a message, cut to maxQuoted bytes at a character
// boundary.
func clipQuote(s string) string {
	if len(s) <= maxQuoted {
		return strconv.Quote(s)
	}
	cut := maxQuoted
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s... (%d bytes)", strconv.Quote(s[:cut]), len(s))
}

// decision is what to do when a connection ends.
type decision struct {
	kind           string            // for the disconnect counters
	code           packet.ReasonCode // for the MQTT 5 DISCONNECT
	sendDisconnect bool
	publishWill    bool
	why            string
	reasonString   string
	level          slog.Level
}

// decide is the one place where the reason a connection ended becomes an
// MQTT reason code, a DISCONNECT, a will decision and a log level.
func (c *conn) decide(err error, kick uint32) decision {
	// The client's own DISCONNECT, read before a kick took effect (a
	// takeover lets the old connection read what its client had sent
	// first), is what ended the connection.
	switch {
	case errors.Is(err, errNormalDisconnect):
		return decision{kind: "normal", why: "client disconnected normally", level: slog.LevelInfo}
	case errors.Is(err, errWillDisconnect):
		return decision{kind: "with_will", publishWill: true, why: "client disconnected with will", level: slog.LevelInfo}
	}
	switch kick {
	case kickShutdown:
		return decision{kind: "shutdown", code: packet.ServerShuttingDown, sendDisconnect: true, why: "server shutting down", level: slog.LevelInfo}
	case kickTakeover:
		// Usually the taking connection has dealt with the will already
		// (attach) and detach finds the session gone; if this connection
		// detaches first (settleTakeover), the will gets what attach would
		// have given it: published unless a delay lets the new connection
		// cancel it [MQTT-3.1.3-9].
		return decision{kind: "taken_over", code: packet.SessionTakenOver, sendDisconnect: true, publishWill: true,
			why: "session taken over by a new connection", level: slog.LevelInfo}
	case kickWriteFailed:
		if err == nil || errors.Is(err, errKicked) || isTimeout(err) {
			return decision{kind: "lost", publishWill: true, why: "connection lost (write failed)", level: slog.LevelInfo}
		}
	case kickAdmin:
		return decision{kind: "admin", code: packet.AdministrativeAction, sendDisconnect: true, publishWill: true,
			why: "disconnected by an administrator", level: slog.LevelInfo}
	}
	var pe *packet.Error
	var he *protocolError
	var re *refuseError
	switch {
	case err == nil:
		return decision{kind: "lost", why: "closed", level: slog.LevelInfo}
	case errors.As(err, &re):
		return decision{kind: "refused", why: re.Error(), level: slog.LevelInfo}
	case errors.Is(err, errConnectAbandoned):
		return decision{kind: "abandoned", why: err.Error(), level: slog.LevelInfo}
	case errors.As(err, &pe):
		return decision{kind: "bad_packet", code: pe.Code, sendDisconnect: true, publishWill: true, why: "bad packet: " + pe.Error(),
			reasonString: pe.Error(), level: slog.LevelWarn}
	case errors.As(err, &he):
		return decision{kind: "protocol_error", code: he.code, sendDisconnect: true, publishWill: true, why: "protocol violation: " + he.Error(),
			reasonString: he.Error(), level: slog.LevelWarn}
	case errors.Is(err, errUnconfirmed):
		return decision{kind: "unconfirmed", code: packet.UnspecifiedError, sendDisconnect: true, publishWill: true,
			why: err.Error(), reasonString: unconfirmedWhy, level: slog.LevelWarn}
	case errors.Is(err, errServer):
		return decision{kind: "server_error", code: packet.ImplementationSpecificError, sendDisconnect: true, publishWill: true,
			why: err.Error(), level: slog.LevelError}
	case isTimeout(err) && c.connected:
		return decision{kind: "keep_alive", code: packet.KeepAliveTimeout, sendDisconnect: true, publishWill: true,
			why: "keep alive expired (no packet within 1.5x the keep alive)", level: slog.LevelInfo}
	case isTimeout(err):
		return decision{kind: "connect_timeout", why: "no CONNECT within the connect timeout", level: slog.LevelInfo}
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), errors.Is(err, syscall.ECONNRESET):
		return decision{kind: "lost", publishWill: true, why: "connection lost", level: slog.LevelInfo}
	default:
		return decision{kind: "lost", publishWill: true, why: "connection error: " + err.Error(), level: slog.LevelInfo}
	}
}

// unconfirmedWhy is the Reason String of the DISCONNECT 0x80 that ends a
// connection whose publish the cluster did not confirm in time.
const unconfirmedWhy = "a publish could not be confirmed in time and may or may not be delivered: send it again"
