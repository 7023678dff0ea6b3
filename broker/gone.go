package broker

import (
	"crypto/tls"
	"errors"
	"net"
	"syscall"
)

// ErrClientGone is returned by a GoneClaimer's claim that gave up because
// the connection's client had closed it while the claim waited.
var ErrClientGone = errors.New("broker: the client closed the connection before CONNACK")

// GoneClaimer is implemented by a Cluster whose Claim may wait long (for
// the node to catch up, for a restored session to settle): longer than a
// client waits for its CONNACK. ClaimUnless is Claim, except that when a
// wait ends and gone reports true, it gives up before anything is claimed
// and returns an error wrapping ErrClientGone: a CONNECT nobody waits for
// any more must not take the session from the client's next connection,
// here or on another node.
type GoneClaimer interface {
	ClaimUnless(clientID string, gone func() bool) error
}

// UnderlyingConner is implemented by a net.Conn wrapper whose reads are not
// the socket's (a WebSocket conn: Read returns message payloads) but which
// can name the conn beneath, so that the broker can see whether the client
// closed its side (clientGone). gorilla's websocket.Conn has the method.
type UnderlyingConner interface {
	UnderlyingConn() net.Conn
}

// clientGone reports whether c's client has closed the connection (its FIN
// or RST arrived) with nothing read after its CONNECT: a client that gave
// up waiting for CONNACK. Where the socket cannot be reached, or off
// Linux, it reports false and the CONNECT goes on as before.
//
// A client that sends more after CONNECT and then closes (a script piping
// CONNECT, PUBLISH, DISCONNECT into a socket) is not gone: what it sent
// is read with the CONNECT (c.lone false) or, on plain TCP, still waits
// in the socket. Over TLS and WebSocket the bytes waiting may be the
// client's close_notify or close frame, so there the closed side decides.
func (c *conn) clientGone() bool {
	if !c.lone {
		return false
	}
	rc := socketBeneath(c.nc)
	if rc == nil || !peerClosed(rc) {
		return false
	}
	if tcpBeneath(c.nc) != nil {
		if n, ok := socketPending(rc); !ok || n > 0 {
			return false
		}
	}
	return true
}

// socketBeneath returns the TCP socket at the bottom of nc, through TLS and
// every wrapper that names the conn beneath it, or nil.
func socketBeneath(nc net.Conn) syscall.RawConn {
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
		case interface{ NetConn() net.Conn }:
			nc = x.NetConn()
		case UnderlyingConner:
			nc = x.UnderlyingConn()
		default:
			return nil
		}
	}
	return nil
}
