package listener

import (
	"net"
	"sync/atomic"
)

// Limit returns a listener that keeps at most max of inner's conns open at
// once. A conn beyond the limit is closed as soon as it is accepted and
// reported to logf (nil discards), rather than left waiting in the kernel
// backlog where its client cannot tell what is wrong. max <= 0 returns
// inner unchanged.
func Limit(inner net.Listener, max int, logf func(msg string, args ...any)) net.Listener {
	if max <= 0 {
		return inner
	}
	if logf == nil {
		logf = func(string, ...any) {}
	}
	return &limitListener{Listener: inner, max: int64(max), logf: logf}
}

type limitListener struct {
	net.Listener
	max  int64
	open atomic.Int64
	logf func(string, ...any)
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) <= l.max {
			return &limitConn{Conn: c, l: l}, nil
		}
		l.open.Add(-1)
		l.logf("connection refused: listener at its max_connections", "remote", c.RemoteAddr().String(), "max_connections", l.max)
		c.Close()
	}
}

// limitConn gives its slot back when closed. It points at its listener
// rather than holding a release func (a closure) and a sync.Once: every
// open connection carries one, so 32 bytes instead of 64.
type limitConn struct {
	net.Conn
	l      *limitListener
	closed atomic.Bool
}

// NetConn returns the wrapped connection.
func (c *limitConn) NetConn() net.Conn { return c.Conn }

// ReadTimeoutSafe marks limitConn as transparent (broker.TransparentConn).
func (c *limitConn) ReadTimeoutSafe() {}

// ReadThrough tells the broker that Read is the wrapped connection's Read
// (broker.ReadThroughConn), so it may read the socket beneath directly.
func (c *limitConn) ReadThrough() {}

func (c *limitConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.l.open.Add(-1)
	}
	return c.Conn.Close()
}
