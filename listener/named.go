package listener

import "net"

// Named makes every connection accepted from ln report name through
// ListenerName (broker.ListenerNamer), so authentication (per-listener
// anonymous access), logs and metrics know which listener a client came
// through. Methods the broker looks for on the inner connection stay
// reachable: CertIdentity is forwarded and NetConn unwraps.
func Named(ln net.Listener, name string) net.Listener {
	return &namedListener{Listener: ln, name: name}
}

type namedListener struct {
	net.Listener
	name string
}

func (l *namedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &namedConn{Conn: c, name: l.name}, nil
}

type namedConn struct {
	net.Conn
	name string
}

// ListenerName is the listener's configured name.
func (c *namedConn) ListenerName() string { return c.name }

// NetConn returns the wrapped connection.
func (c *namedConn) NetConn() net.Conn { return c.Conn }

// ReadTimeoutSafe tells the broker it may see through to the socket to park
// the connection while idle (broker.TransparentConn): Read is the wrapped
// connection's Read.
func (c *namedConn) ReadTimeoutSafe() {}

// ReadThrough tells the broker that Read is the wrapped connection's Read
// (broker.ReadThroughConn), so it may read the socket beneath directly.
func (c *namedConn) ReadThrough() {}

// CertIdentity forwards to the wrapped connection, if it has one.
func (c *namedConn) CertIdentity() (string, bool) {
	if ci, ok := c.Conn.(CertIdentity); ok {
		return ci.CertIdentity()
	}
	return "", false
}
