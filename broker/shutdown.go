package broker

import (
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// Shutdown ends most connections of a broker with many clients while they
// are parked: idle, with no reader goroutine (park.go). Waking a reader
// for each, as a kick does, costs a goroutine start, a read buffer and a
// second of lingering in a goroutine per connection; with 19,900 parked
// persistent sessions on one core that took 4 to 10 s (bench/RESULTS.md,
// storm). endParked does the same work from Shutdown's own goroutine:
// decide and count, detach the session, write the final DISCONNECT with
// one non-blocking send, end the write side, and leave the socket in the
// poller, which discards what the client still sends and closes the
// socket when the client hangs up (as closeGracefully does, so that unread
// input never turns the close into a reset that loses the DISCONNECT).
// Shutdown closes whatever is left after Options.CloseLinger.

// endParked takes over the parked connections among conns whose socket is
// plain TCP beneath read-through wrappers (tcpBeneath: the poller can
// read it raw) and ends them as above. It returns those it ended, which
// linger until the client hangs up or endLingering, and the others, which
// Shutdown kicks.
func (s *Server) endParked(conns []*conn) (lingering, others []*conn) {
	for _, c := range conns {
		// c.nc never changes; a parked connection is connected (park)
		// and has a session, and from the CAS on no reader runs.
		// Ended while it is taken over: the poller leaves it alone until
		// it lingers (ending); an event it drops meanwhile is seen again
		// when linger arms the socket.
		tc := tcpBeneath(c.nc)
		if tc == nil || !c.state.CompareAndSwap(readerParked, readerEnded) {
			others = append(others, c)
			continue
		}
		c.kick.CompareAndSwap(kickNone, kickShutdown)
		d := c.decide(errKicked, kickShutdown)
		c.report(d)
		s.detach(c, d.publishWill) // Shutdown does not publish wills
		if !c.writeFinal(c.finalDisconnect(d)) {
			// Output is still waiting (a client that does not read):
			// the flusher writes it, closeAfterOutput waits for it and
			// lingers; it stays ended, so the poller leaves it alone.
			go func() {
				c.closeAfterOutput()
				s.connDone(c)
			}()
			continue
		}
		tc.CloseWrite() // FIN after the DISCONNECT
		// Armed again: an event the poller took since the CAS found no
		// parked reader to wake and was dropped.
		c.state.Store(readerEnding)
		if rc, err := tc.SyscallConn(); err != nil || c.poller.linger(rc, c) != nil {
			c.endNow()
			continue
		}
		lingering = append(lingering, c)
	}
	return lingering, others
}

// writeFinal writes dp (nil: nothing) with one non-blocking send and marks
// c's output dead. It returns false, leaving dp and what else is pending
// to a flusher (closeAfterOutput waits for it), when output was already
// waiting or the socket did not take all of dp.
func (c *conn) writeFinal(dp *packet.Disconnect) bool {
	c.outMu.Lock()
	defer c.outMu.Unlock()
	if c.dead {
		return true // the socket failed: nothing more to write
	}
	if c.flushing || c.pending() > 0 {
		if dp != nil {
			c.appendControlLocked(dp)
		}
		c.startFlushLocked()
		return false
	}
	if dp != nil {
		// Nothing before it waits for the store or the cluster: the
		// DISCONNECT may go at once (flushNowLocked would wait for a
		// durable ticket of long ago).
		c.appendControlLocked(dp)
		if ob := c.ob; ob != nil && len(ob.full) == 0 {
			n := writeNow(c.nc, ob.out)
			c.srv.stats.bytesSent.Add(uint64(n))
			ob.out = ob.out[:copy(ob.out, ob.out[n:])]
		}
		if c.pending() > 0 {
			c.startFlushLocked()
			return false
		}
	}
	c.dead = true
	c.releaseOutState()
	return true
}

// endNow closes the socket of an ending connection and forgets it, once
// whoever calls it first: the poller when the client hung up, Shutdown
// when the linger ran out.
func (c *conn) endNow() {
	if !c.state.CompareAndSwap(readerEnding, readerEnded) {
		return
	}
	c.poller.unregister(c)
	c.nc.Close()
	c.srv.connDone(c)
}

// endLingering closes every connection of lingering still open.
func endLingering(lingering []*conn) {
	for _, c := range lingering {
		c.endNow()
	}
}

// lingerBound closes what still lingers d from now.
func lingerBound(lingering []*conn, d time.Duration) *time.Timer {
	return time.AfterFunc(d, func() { endLingering(lingering) })
}
