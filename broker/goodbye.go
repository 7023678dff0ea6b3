package broker

import (
	"crypto/tls"
	"net"
	"time"
)

// lingerTimeout is Options.CloseLinger's default: how long a closing
// connection, its write side ended, reads and discards what the client
// still sends before it closes.
const lingerTimeout = time.Second

// GracefulCloser is implemented by connections that end themselves in
// their own way so that the peer reads everything written before (the
// WebSocket listener's, whose close frame precedes the end of the TLS and
// TCP streams). CloseGracefully ends the write side, reads and discards
// input until the peer closes its side or deadline passes, then closes the
// connection. It is looked for on the conn and beneath its transparent
// wrappers; connections without it get closeGracefully's treatment.
type GracefulCloser interface {
	CloseGracefully(deadline time.Time) error
}

// closeGracefully closes nc so that the client reads all that was written
// to it, the final DISCONNECT included. Closing a socket that still holds
// unread input makes the kernel answer with RST instead of FIN, and a
// client that has not read everything yet then gets "connection reset by
// peer" and may never see the DISCONNECT that said why. So: end the write
// side (TLS close_notify, TCP FIN), read and discard input until the client
// closes its side or deadline passes, and only then close.
// buf is scratch space for the discarded input.
func closeGracefully(nc net.Conn, deadline time.Time, buf []byte) error {
	if g := gracefulCloserOf(nc); g != nil {
		g.CloseGracefully(deadline)
		return nc.Close() // for what wrappers above it do on Close
	}
	if raw := halfClose(nc); raw != nil {
		discardUntil(raw, deadline, buf)
	}
	return nc.Close()
}

// gracefulCloserOf returns nc, or the connection beneath its transparent
// wrappers (a listener name over a WebSocket, as roost serve stacks them),
// that implements GracefulCloser; nil if none does.
func gracefulCloserOf(nc net.Conn) GracefulCloser {
	for range 8 {
		if g, ok := nc.(GracefulCloser); ok {
			return g
		}
		t, ok := nc.(TransparentConn)
		if !ok {
			return nil
		}
		nc = t.NetConn()
	}
	return nil
}

// halfClose ends the write side of nc and of every connection beneath it
// (close_notify for TLS, FIN for TCP) and returns the TCP socket at the
// bottom, or nil when nc is not a stack of connections it knows.
func halfClose(nc net.Conn) *net.TCPConn {
	for range 8 {
		switch x := nc.(type) {
		case *net.TCPConn:
			x.CloseWrite()
			return x
		case *tls.Conn:
			// Fails harmlessly before the handshake completed.
			x.CloseWrite()
			nc = x.NetConn()
		case TransparentConn:
			nc = x.NetConn()
		default:
			return nil
		}
	}
	return nil
}

// discardUntil reads and drops what arrives on raw until the peer closes
// its side, the read fails, or deadline passes. Raw bytes are enough: what
// the client sends now is never handled, only taken off the socket.
func discardUntil(raw net.Conn, deadline time.Time, buf []byte) {
	if raw.SetReadDeadline(deadline) != nil {
		return
	}
	for {
		if _, err := raw.Read(buf); err != nil {
			return
		}
	}
}
