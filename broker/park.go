package broker

import (
	"crypto/tls"
	"net"
	"syscall"
	"time"
)

// parkIdle is how long a connection's reader waits for data before it
// parks: it hands the socket to the poller and exits, so an idle
// connection holds neither a goroutine nor a read buffer. Busy connections
// never wait that long and never pay for parking.
const parkIdle = 50 * time.Millisecond

// Reader states.
const (
	readerRunning uint32 = iota
	readerParked
)

// TransparentConn is implemented by net.Conn wrappers (such as those of the
// listener package) that the broker may look through to the socket
// beneath, to watch an idle connection with epoll instead of a blocked
// goroutine. By implementing it a wrapper promises that after a Read
// returns a timeout it still works, and that it holds no bytes it has read
// but not returned, so the socket's readiness is the wrapper's readiness.
// *net.TCPConn and *tls.Conn are known without it; any other connection
// keeps a reader goroutine for its whole life.
type TransparentConn interface {
	net.Conn
	NetConn() net.Conn
	ReadTimeoutSafe()
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

// park hands the idle connection to the poller. It returns true when the
// reader goroutine must exit (someone else runs the reader from now on),
// false when parking is impossible and the reader should just keep
// reading.
func (c *conn) park() bool {
	if !c.parkable {
		return false
	}
	if c.poller == nil {
		if c.poller = c.srv.poller(); c.poller == nil {
			c.parkable = false // never try again
			return false
		}
		c.poller.register(c)
	}
	p := c.poller
	if !c.readBy.IsZero() {
		// The keep alive (1.5x) still runs while parked.
		c.wakeAt.Store(c.readBy.UnixNano())
	} else {
		c.wakeAt.Store(0)
	}
	id, rc := c.parkID, rawConnOf(c.nc)
	if rc == nil {
		c.parkable = false
		return false
	}
	c.state.Store(readerParked)
	// From here on another goroutine may wake c and run its reader: touch
	// only the copies above and atomics.
	var armErr error
	err := rc.Control(func(fd uintptr) { armErr = p.arm(int(fd), id) })
	if err == nil {
		err = armErr
	}
	if err != nil {
		if c.state.CompareAndSwap(readerParked, readerRunning) {
			c.parkable = false // keep the reader from now on
			c.logger().Debug("cannot park idle connection; keeping its reader", "err", err)
			return false
		}
		return true
	}
	if c.kick.Load() != kickNone {
		c.wake() // kicked while parking: its wake-up found the reader running
	}
	return true
}

// wake restarts the reader of a parked connection; for a running one it
// does nothing. Any goroutine may call it.
func (c *conn) wake() {
	if c.state.CompareAndSwap(readerParked, readerRunning) {
		go c.run()
	}
}
