package broker

import "sync/atomic"

// stats are the broker-wide counters behind $SYS (and, later, metrics).
// Plain atomics: they are bumped on the hot path from many goroutines.
type stats struct {
	connected       atomic.Int64 // current client connections (past CONNACK)
	maxConnected    atomic.Int64
	totalConnects   atomic.Uint64
	msgsReceived    atomic.Uint64 // PUBLISH packets from clients
	msgsSent        atomic.Uint64 // PUBLISH packets to clients
	pubDropped      atomic.Uint64 // messages dropped: queue full, slow consumer, too large, expired
	bytesReceived   atomic.Uint64
	bytesSent       atomic.Uint64
	expiredSessions atomic.Uint64
}

func (st *stats) noteConnected() {
	n := st.connected.Add(1)
	st.totalConnects.Add(1)
	for {
		m := st.maxConnected.Load()
		if n <= m || st.maxConnected.CompareAndSwap(m, n) {
			return
		}
	}
}
