package broker

import (
	"runtime"
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
	// readerEnding: a parked connection Shutdown ended (shutdown.go)
	// lingers: no reader runs again, the poller discards what arrives
	// until the client hangs up.
	readerEnding
	// readerEnded: Shutdown is taking a parked connection over, or ends
	// it the slow way, or its socket is closed: only its owner touches it.
	readerEnded
)

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

// wakeNext is wake for the poller, which wakes connections in the order
// their bytes arrived (epoll reports them so) and must keep that order:
// when it started a reader it returns true, and the reader sends on
// started once it runs; the poller waits for that before it wakes the
// next connection. Without the wait the scheduler would run the readers
// in the opposite order: a new goroutine goes first in line (the runtime's
// runnext), pushing back the one started before it, so of a SUBSCRIBE and
// a PUBLISH on another connection that arrived 50 µs apart, the PUBLISH
// was routed first in about a third of the trials (issue 18). With the
// wait, the woken reader runs, reads and handles what arrived before the
// poller can start the next one, unless it blocks: on one P the order is
// then exactly the order of arrival, on several the window shrinks to the
// start of one goroutine.
func (c *conn) wakeNext(started chan<- struct{}) bool {
	if !c.state.CompareAndSwap(readerParked, readerRunning) {
		return false
	}
	go func() {
		started <- struct{}{} // buffered: never blocks
		c.run()
	}()
	return true
}

// afterWake is called by a reader whose read waited in Go's netpoller and
// then brought bytes, before it handles them. The netpoller hands the
// readers one poll found to the scheduler in the opposite order of their
// sockets' events (runtime: netpoll collects them with gList.push, which
// prepends, and findRunnable runs the list's head at once): of a SUBSCRIBE
// and, 50 µs later, a PUBLISH on another connection, both arriving while
// the broker's thread was busy, the PUBLISH was routed first (issue 18:
// about 100 inversions per 1,000 on a loaded machine). The first woken
// reader therefore yields once: it goes to the back of the run queue, and
// the readers queued behind it, woken with it and older, run first; they
// do not yield while it does, or they would reverse the order again. On
// one P (a broker pinned to one core) two readers woken together are then
// served in arrival order (TestUnparkedConnectionsWakeInArrivalOrder);
// three or more keep the oldest ones' order but serve the newest last.
// A reader woken alone pays one Gosched; a busy reader, whose reads find
// bytes waiting, never gets here.
//
// It yields wakeYields times: Gosched puts the reader on the global run
// queue, which the scheduler serves before the local one on every 61st
// round; one yield would then let it run before the readers queued behind
// it once in 61 times, three yields once in 226,981.
func (s *Server) afterWake() {
	if s.wakeYield.CompareAndSwap(false, true) {
		for range wakeYields {
			runtime.Gosched()
		}
		s.wakeYield.Store(false)
	}
}

// wakeYields is how often afterWake yields.
const wakeYields = 3
