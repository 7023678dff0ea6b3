package broker

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// DropReason says why a message was not delivered to a session.
type DropReason uint8

// Drop reasons.
const (
	DropQueueFull    DropReason = iota // the session's queue was at MaxQueued or MaxQueuedBytes
	DropSlowConsumer                   // QoS 0 for a client with too much unwritten output
	DropTooLarge                       // larger than the client's Maximum Packet Size
	DropExpired                        // Message Expiry Interval passed while queued
	DropUnauthorized                   // queued, then refused by the Authorizer at delivery (rules changed)
	numDropReasons
)

func (r DropReason) String() string {
	switch r {
	case DropQueueFull:
		return "queue_full"
	case DropSlowConsumer:
		return "slow_consumer"
	case DropTooLarge:
		return "too_large"
	case DropExpired:
		return "expired"
	case DropUnauthorized:
		return "not_authorized"
	}
	return "unknown"
}

// latencyBounds are the upper bounds of the publish-to-delivery latency
// histogram buckets.
var latencyBounds = [...]time.Duration{
	50 * time.Microsecond, 100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond, 10 * time.Millisecond,
	25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond,
	500 * time.Millisecond, time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second,
}

// stats are the broker-wide counters behind $SYS and Server.Stats. The hot
// path only does atomic adds; snapshots are assembled on demand.
type stats struct {
	connected       atomic.Int64 // current client connections (past CONNACK, or admitted by MaxConnections and being authenticated)
	maxConnected    atomic.Int64
	totalConnects   atomic.Uint64
	msgsReceived    [3]atomic.Uint64 // PUBLISH packets from clients, by QoS
	msgsSent        [3]atomic.Uint64 // PUBLISH packets to clients, by QoS
	payloadIn       [3]atomic.Uint64 // PUBLISH payload bytes from clients, by QoS
	payloadOut      [3]atomic.Uint64 // PUBLISH payload bytes to clients, by QoS
	dropped         [numDropReasons]atomic.Uint64
	bytesReceived   atomic.Uint64
	bytesSent       atomic.Uint64
	expiredSessions atomic.Uint64
	retainedRefused atomic.Uint64 // retained PUBLISHes a retained limit kept from being stored

	latency    [len(latencyBounds) + 1]atomic.Uint64
	latencySum atomic.Int64 // nanoseconds

	mu          sync.Mutex // guards the per-reason maps: connect and close are not the hot path
	refused     map[packet.ReasonCode]uint64
	disconnects map[string]uint64
}

// noteConnected counts a connection that attached to its session; its
// place in connected was taken by reserveConnection.
func (st *stats) noteConnected() {
	n := st.connected.Load()
	st.totalConnects.Add(1)
	for {
		m := st.maxConnected.Load()
		if n <= m || st.maxConnected.CompareAndSwap(m, n) {
			return
		}
	}
}

func (st *stats) noteRefused(rc packet.ReasonCode) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.refused == nil {
		st.refused = make(map[packet.ReasonCode]uint64)
	}
	st.refused[rc]++
}

func (st *stats) noteDisconnect(kind string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.disconnects == nil {
		st.disconnects = make(map[string]uint64)
	}
	st.disconnects[kind]++
}

func (st *stats) noteLatency(d time.Duration) {
	i := 0
	for i < len(latencyBounds) && d > latencyBounds[i] {
		i++
	}
	st.latency[i].Add(1)
	st.latencySum.Add(int64(d))
}

// addReceived moves a connection's per-QoS counts of received PUBLISH
// packets into the broker's counters and zeroes them.
func (st *stats) addReceived(n, bytes *[3]uint32) {
	for q := range n {
		if n[q] != 0 {
			st.msgsReceived[q].Add(uint64(n[q]))
			st.payloadIn[q].Add(uint64(bytes[q]))
			n[q], bytes[q] = 0, 0
		}
	}
}

// addSent does the same for sent PUBLISH packets.
func (st *stats) addSent(n, bytes *[3]uint64) {
	for q := range n {
		if n[q] != 0 {
			st.msgsSent[q].Add(n[q])
			st.payloadOut[q].Add(bytes[q])
		}
	}
}

func (st *stats) sumReceived() (n uint64) {
	for i := range st.msgsReceived {
		n += st.msgsReceived[i].Load()
	}
	return n
}

func (st *stats) sumSent() (n uint64) {
	for i := range st.msgsSent {
		n += st.msgsSent[i].Load()
	}
	return n
}

func (st *stats) sumDropped() (n uint64) {
	for i := range st.dropped {
		n += st.dropped[i].Load()
	}
	return n
}

// Stats is a snapshot of the broker's figures.
type Stats struct {
	Uptime          time.Duration
	Connected       int64 // client connections now
	MaxConnected    int64 // the most at once since start
	ConnectsTotal   uint64
	Sessions        int // connected and offline persistent sessions
	SessionsExpired uint64
	// ConnectsRefused counts CONNECTs answered with a failure code, by
	// 5.0 reason code; those closed without a CONNACK because the
	// cluster could not record their client id's owner count as 0x88.
	ConnectsRefused map[packet.ReasonCode]uint64
	// Disconnects counts ended connections by why they ended: normal,
	// with_will, taken_over, shutdown, keep_alive, lost, bad_packet,
	// protocol_error, server_error, admin, refused.
	Disconnects      map[string]uint64
	MessagesReceived [3]uint64 // PUBLISH from clients by QoS
	MessagesSent     [3]uint64 // PUBLISH to clients by QoS
	PayloadReceived  [3]uint64 // PUBLISH payload bytes from clients by QoS
	PayloadSent      [3]uint64 // PUBLISH payload bytes to clients by QoS
	BytesReceived    uint64
	BytesSent        uint64
	Dropped          map[DropReason]uint64
	Inflight         int // QoS 1/2 messages sent and not yet acknowledged, all sessions
	Queued           int // messages waiting in session queues
	Retained         int
	// RetainedBytes is what the retained messages outside $SYS count
	// towards Options.MaxRetainedBytes.
	RetainedBytes int
	// RetainedRefused counts retained PUBLISHes delivered but not kept
	// because of Options.MaxRetained or MaxRetainedBytes.
	RetainedRefused uint64
	Subscriptions   int
	// Latency is the publish-to-delivery histogram: the time from a
	// PUBLISH arriving to its copy being queued for a subscriber's socket,
	// measured for one delivery in 16.
	Latency Histogram
}

// Histogram is a cumulative-free bucket histogram: Counts[i] counts
// observations <= Bounds[i] and > Bounds[i-1]; the last count is above every
// bound.
type Histogram struct {
	Bounds []time.Duration
	Counts []uint64
	Sum    time.Duration
}

// Stats returns a snapshot of the broker's figures. It walks every session
// for the inflight and queued totals, so call it at scrape intervals, not
// per message.
func (s *Server) Stats() Stats {
	st := &s.stats
	out := Stats{
		Uptime:          time.Since(s.start),
		Connected:       st.connected.Load(),
		MaxConnected:    st.maxConnected.Load(),
		ConnectsTotal:   st.totalConnects.Load(),
		SessionsExpired: st.expiredSessions.Load(),
		BytesReceived:   st.bytesReceived.Load(),
		BytesSent:       st.bytesSent.Load(),
		Dropped:         make(map[DropReason]uint64),
		Retained:        s.ret.count(),
		RetainedRefused: st.retainedRefused.Load(),
		Subscriptions:   s.router.tree.Len(),
		ConnectsRefused: make(map[packet.ReasonCode]uint64),
		Disconnects:     make(map[string]uint64),
	}
	_, out.RetainedBytes = s.ret.usage()
	for i := range 3 {
		out.MessagesReceived[i] = st.msgsReceived[i].Load()
		out.MessagesSent[i] = st.msgsSent[i].Load()
		out.PayloadReceived[i] = st.payloadIn[i].Load()
		out.PayloadSent[i] = st.payloadOut[i].Load()
	}
	for i := range st.dropped {
		out.Dropped[DropReason(i)] = st.dropped[i].Load()
	}
	st.mu.Lock()
	for k, v := range st.refused {
		out.ConnectsRefused[k] = v
	}
	for k, v := range st.disconnects {
		out.Disconnects[k] = v
	}
	st.mu.Unlock()
	out.Latency = Histogram{Bounds: latencyBounds[:], Counts: make([]uint64, len(st.latency)), Sum: time.Duration(st.latencySum.Load())}
	for i := range st.latency {
		out.Latency.Counts[i] = st.latency[i].Load()
	}
	for _, ss := range s.sessionList() {
		ss.mu.Lock()
		out.Inflight += len(ss.inflight)
		out.Queued += ss.queueLen()
		ss.mu.Unlock()
	}
	out.Sessions = len(s.sessionList())
	return out
}

// sessionList returns the current sessions.
func (s *Server) sessionList() []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	list := make([]*session, 0, len(s.sessions))
	for _, ss := range s.sessions {
		list = append(list, ss)
	}
	return list
}
