package broker

import "time"

const (
	// settleTimeout bounds how long a new connection waits for the
	// connection it takes over to apply what its client had already sent.
	settleTimeout = 2 * time.Second
	// pendingReadTimeout bounds how long a connection being taken over
	// reads what its client had already sent.
	pendingReadTimeout = 200 * time.Millisecond
	// pendingProbe is how long one such read waits on a transport whose
	// kernel buffer cannot be inspected (WebSocket): bytes already sent are
	// there by then.
	pendingProbe = 20 * time.Millisecond
)

// settleTakeover runs before a new connection takes over the session of
// client id [MQTT-3.1.4-3]. A client that sent DISCONNECT, closed and
// reconnected at once has its DISCONNECT (and with it "discard my will",
// or "end my session" through a Session Expiry Interval of 0) in the old
// connection's socket, possibly not read yet: the new CONNECT can arrive
// first. So the old connection is kicked, reads and applies what its
// client had already sent (conn.readPending), and detaches; only then does
// attach decide about the old will and session. A connection whose client
// sent nothing more detaches as taken over, with the same outcome attach's
// own takeover has. The wait is bounded by settleTimeout, after which
// attach takes over as before.
func (s *Server) settleTakeover(id string) {
	s.settleTakeoverWithin(id, settleTimeout)
}

// settleTakeoverWithin is settleTakeover with the wait bounded by within
// instead (none when it is not positive).
func (s *Server) settleTakeoverWithin(id string, within time.Duration) {
	s.mu.Lock()
	var oc *conn
	if old := s.sessions[id]; old != nil {
		old.mu.Lock()
		oc = old.conn
		old.mu.Unlock()
	}
	if oc == nil {
		s.mu.Unlock()
		return
	}
	done := s.settling[oc]
	if done == nil {
		if s.settling == nil {
			s.settling = make(map[*conn]chan struct{})
		}
		done = make(chan struct{})
		s.settling[oc] = done
	}
	s.mu.Unlock()
	oc.kickAfterPending(kickTakeover)
	t := time.NewTimer(max(within, 0))
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		oc.logger().Warn("taken-over connection did not settle in time; taking over anyway", "within", max(within, 0))
		s.mu.Lock()
		if s.settling[oc] == done {
			delete(s.settling, oc)
		}
		s.mu.Unlock()
	}
}

// kickAfterPending is kickOut for a takeover that must first see what the
// client already sent. Where the socket can be inspected (readPending asks
// the kernel what it holds) the reader is interrupted at once, as by
// kickOut; elsewhere (WebSocket) a reader blocked in Read gets pendingProbe
// to return bytes already there, since a deadline in the past fails the
// read without looking at the socket, and on a WebSocket for good.
func (c *conn) kickAfterPending(reason uint32) {
	c.kick.CompareAndSwap(kickNone, reason)
	by := time.Now()
	if !c.resumable { // transport.go
		by = by.Add(pendingProbe)
	}
	c.nc.SetReadDeadline(by)
	c.outMu.Lock()
	c.releaseReaderLocked()
	c.outMu.Unlock()
	c.wake()
}

// settledLocked tells whoever waits in settleTakeover for c that c has
// detached. s.mu must be held.
func (s *Server) settledLocked(c *conn) {
	if done, ok := s.settling[c]; ok {
		close(done)
		delete(s.settling, c)
	}
}

// readPending reads, without waiting for more to come, what the client had
// already sent when its connection was kicked for a takeover, appending it
// to *buf for the read loop to handle (see settleTakeover). It reports
// whether it read anything; all of its reads end by *by, set on the first
// call.
func (c *conn) readPending(buf *[]byte, by *time.Time) bool {
	now := time.Now()
	if by.IsZero() {
		*by = now.Add(pendingReadTimeout)
	}
	if !now.Before(*by) {
		return false
	}
	wait := *by
	if rc := rawConnOf(c.nc); rc != nil {
		if n, ok := socketPending(rc); ok && n == 0 {
			if tcpBeneath(c.nc) != nil {
				return false // nothing in the socket (a close without DISCONNECT reads as nothing too)
			}
			// A TLS conn may still hold records it read from the socket
			// with earlier ones: a read whose deadline has passed returns
			// them without waiting (TestReadPendingSeesRecordsTLSHolds).
			wait = now
		}
	} else if p := now.Add(pendingProbe); p.Before(wait) {
		wait = p
	}
	b := *buf
	if len(b) == cap(b) {
		b = append(b, 0)[:len(b)]
	}
	c.nc.SetReadDeadline(wait)
	m, _ := c.nc.Read(b[len(b):cap(b)])
	if m <= 0 {
		return false
	}
	*buf = b[:len(b)+m]
	c.srv.stats.bytesReceived.Add(uint64(m))
	return true
}
