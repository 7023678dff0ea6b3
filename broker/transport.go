package broker

import (
	"crypto/tls"
	"net"
	"syscall"
	"time"
)

// The transport contract: what the broker assumes of the net.Conn a
// listener hands it, in one place, so that a new transport cannot fall
// into the hole the WebSocket transport once did (its connections were
// dropped ten seconds after CONNACK, when the CONNECT deadline, left armed
// on purpose, fired).
//
// Every conn is read by one goroutine at a time and written by another;
// Close, SetReadDeadline and SetWriteDeadline may be called from any
// goroutine. Beyond that a conn is one of two kinds:
//
//   - Resumable: a Read that returns a timeout leaves the conn intact, and
//     the next Read after moving the deadline goes on where the last one
//     stopped. *net.TCPConn and *tls.Conn are (crypto/tls keeps no error
//     for a timeout, which is a temporary net.Error, and keeps the part of
//     a record it has; a *tls.Conn Read may return data and a timeout
//     together, so data that comes with an error is always handled
//     first), and so is any
//     wrapper that implements TransparentConn over one of them (the
//     listener package's PROXY, limit and identity conns). Only resumable
//     conns may park: the poller watches the socket beneath and a woken
//     reader reads on (park.go). Their read deadline is moved only when it
//     must come sooner; one that fires early (data arrived since it was
//     set, or parking failed) is cleared and re-armed by the reader, so a
//     busy connection pays one timer per keep-alive period, not a timer
//     update per read.
//
//   - Fatal: any other conn, such as the WebSocket listener's (gorilla's
//     websocket.Conn keeps a read timeout as a permanent error and panics
//     after a thousand further reads). A read timeout ends such a conn, so
//     its read deadline must never fire before the connection is really
//     due to end: it is always at or after the keep-alive (or connect)
//     deadline, and at most fatalSlack of the keep-alive interval later,
//     re-armed when the keep-alive deadline moves past it. Such conns
//     never park; they keep a reader goroutine for their whole life.
//
// Either way, the deadline set to now by kickOut (takeover, shutdown, an
// admin kick) is the end of reading: the reader sees the kick and the
// conn is finished. A takeover first lets the old conn read what its
// client had already sent (takeover.go: readPending asks the kernel what a
// resumable conn's socket holds; a fatal one gets one short read). After a failed write (kickWriteFailed) a resumable
// conn reads on while reads bring data, for at most lastReadGrace (a
// *tls.Conn returns one record per read), so that what the client sent
// before it went (a DISCONNECT deciding about its will) is
// applied; a fatal conn cannot read after its deadline fired and ends. Writes have their own deadline (writeTimeout per
// write) and must still work after a read timeout, so that a final
// DISCONNECT reaches the client.
//
// Closing is the same for both kinds: the write side ends first (FIN, TLS
// close_notify, or a WebSocket close frame through GracefulCloser), the
// client's input is drained for a bounded time, then the conn closes, so
// that a final DISCONNECT is read rather than reset away (goodbye.go).
//
// resumable(nc) decides the kind; conn.resumable records it.

// TransparentConn is implemented by net.Conn wrappers (such as those of the
// listener package) that the broker may look through to the socket
// beneath, to watch an idle connection with epoll instead of a blocked
// goroutine and to write a chain of output blocks with one writev. By
// implementing it a wrapper promises that after a Read returns a timeout
// it still works, and that it holds no bytes it has read but not
// returned, so the socket's readiness is the wrapper's readiness.
// *net.TCPConn and *tls.Conn are known without it; any other connection
// is treated as one whose read timeouts are fatal.
type TransparentConn interface {
	net.Conn
	NetConn() net.Conn
	ReadTimeoutSafe()
}

// ReadThroughConn is implemented by TransparentConn wrappers whose Read is
// the wrapped connection's Read, always: they add nothing to what is read
// and hold nothing back (a wrapper that returns bytes it read ahead, as the
// PROXY protocol's does, is not one). The broker's reader may then read the
// TCP socket beneath with raw system calls (readNow), which a broker woken
// from idle pays no runtime bookkeeping for.
type ReadThroughConn interface {
	TransparentConn
	ReadThrough()
}

// tcpBeneath returns the TCP socket nc reads from when every layer above
// it is a ReadThroughConn (or there is none), else nil: TLS and WebSocket
// conns transform what they read.
func tcpBeneath(nc net.Conn) *net.TCPConn {
	for range 8 {
		switch x := nc.(type) {
		case *net.TCPConn:
			return x
		case ReadThroughConn:
			nc = x.NetConn()
		default:
			return nil
		}
	}
	return nil
}

// rawConnOf returns the socket under nc if every layer above it is known to
// be transparent, else nil.
func rawConnOf(nc net.Conn) syscall.RawConn {
	for range 8 {
		switch x := nc.(type) {
		case *net.TCPConn:
			rc, err := x.SyscallConn()
			if err != nil {
				return nil
			}
			return rc
		case *tls.Conn:
			nc = x.NetConn()
		case TransparentConn:
			nc = x.NetConn()
		default:
			return nil
		}
	}
	return nil
}

// resumable reports whether a read timeout on nc leaves it usable (see
// the contract above).
func resumable(nc net.Conn) bool { return rawConnOf(nc) != nil }

// fatalSlack divides the keep-alive interval to give how late the read
// deadline of a conn whose timeouts are fatal may fire after the
// keep-alive deadline: a busy connection then re-arms its timer once per
// sixteenth of the interval instead of on every read, and an expired keep
// alive is noticed at most 1/16 of it late.
const fatalSlack = 16

// readDeadline is the read deadline the reader of c sets for the
// keep-alive (or connect) deadline target, given the deadline currently
// set (zero: none), and whether it must be set. For a resumable conn
// target may be sooner than the keep-alive deadline (parking) and an
// early timeout is harmless; for a fatal one the deadline never comes
// before target.
func (c *conn) readDeadline(target, current time.Time) (time.Time, bool) {
	if c.resumable {
		if !target.IsZero() && (current.IsZero() || target.Before(current)) {
			return target, true
		}
		return current, false
	}
	if target.IsZero() {
		return target, !current.IsZero()
	}
	slack := c.keepAlive / fatalSlack
	if !c.connected {
		slack = 0 // the connect timeout is exact
	}
	latest := target.Add(slack)
	if !current.IsZero() && !current.Before(target) && !current.After(latest) {
		return current, false // it cannot fire early, nor much too late
	}
	return latest, true
}
