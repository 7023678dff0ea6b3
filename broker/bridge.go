package broker

import (
	"net"
	"strings"

	"github.com/roost-mqtt/roost/packet"
)

// A 3.1 or 3.1.1 client that sets the bridge bit on its protocol level
// (mosquitto's try_private, packet.Connect.Bridge) is another broker
// bridging into this one. Those protocol versions have no subscription
// options, so a two-way bridge would get back every message it forwards
// and, with RETAIN cleared on delivery [MQTT-3.3.1-9 (3.1.1)], would turn
// retained messages into live ones on the far side. Like mosquitto
// (handle_subscribe.c), the server therefore gives a bridge's
// subscriptions No Local and Retain As Published, the MQTT 5 options a
// 5.0 bridge asks for itself.

// bridgeSubOptions returns the options a subscription gets: as requested,
// plus No Local and Retain As Published for a bridge. A shared
// subscription gets no No Local, which MQTT 5 forbids on it
// [MQTT-3.8.3-4]: a message goes to one group member, so there is no
// echo to every bridge to prevent.
func bridgeSubOptions(info *ClientInfo, o packet.SubOptions, shared bool) packet.SubOptions {
	if info == nil || !info.Bridge {
		return o
	}
	o.RetainAsPublished = true
	if !shared {
		o.NoLocal = true
	}
	return o
}

// DialInternal returns a connection into the server from inside the
// process, for components that act as clients of their own broker (a
// bridge's local side). The server serves the other end of an in-memory
// pipe as it would a network connection, with two differences: the
// client is trusted, so neither the Authenticator nor the Authorizer is
// asked about it (what it may do is the embedder's configuration, not a
// remote party's claim), and it appears with listener "internal" and
// remote address "internal:name". Only code in the process can make such
// a connection: nothing that arrives over a listener is ever internal.
// After Shutdown the connection is closed at once.
func (s *Server) DialInternal(name string) net.Conn {
	c1, c2 := net.Pipe()
	s.ServeConn(&internalConn{Conn: c2, name: name})
	return c1
}

// internalConn is the server's end of a DialInternal pipe.
type internalConn struct {
	net.Conn
	name string
}

func (c *internalConn) RemoteAddr() net.Addr { return internalAddr(c.name) }
func (c *internalConn) ListenerName() string { return "internal" }

type internalAddr string

func (a internalAddr) Network() string { return "internal" }
func (a internalAddr) String() string  { return "internal:" + string(a) }

// connectionStateTopic reports whether name has the form
// $SYS/broker/connection/ID/state: where a mosquitto bridge (or Roost's)
// keeps its connection state, "1" or "0", on the broker it bridges into,
// with a will for the "0". Clients may publish there, unlike elsewhere
// under $SYS (the Authorizer still decides), so that bridges into Roost
// can be watched as on mosquitto.
func connectionStateTopic(name string) bool {
	id, ok := strings.CutPrefix(name, "$SYS/broker/connection/")
	if !ok {
		return false
	}
	id, ok = strings.CutSuffix(id, "/state")
	return ok && id != "" && !strings.Contains(id, "/")
}
