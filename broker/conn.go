package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

const (
	// readBufInitial is the read buffer a connection starts with; it grows
	// to hold the largest packet seen and shrinks back when idle.
	readBufInitial = 1024
	// writeTimeout bounds one write to a client that stopped reading.
	writeTimeout = 30 * time.Second
	// maxOutBuffered is the slow-consumer bound: QoS 0 messages for a client
	// with this many bytes not yet written are dropped (and counted).
	// QoS 1/2 are bounded by the inflight window instead and never dropped
	// here.
	maxOutBuffered = 4 << 20
	// drainTimeout bounds how long a closing connection waits for pending
	// writes (final DISCONNECT included) to reach the socket.
	drainTimeout = 2 * time.Second
)

// conn is one client network connection. A reader goroutine (run) reads,
// decodes and handles packets; writes are appended to out by any goroutine
// and written by a flusher goroutine that exists only while there is
// something to write; an idle connection parks (park.go) and holds none.
type conn struct {
	srv *Server
	nc  net.Conn
	log atomic.Pointer[slog.Logger] // made on first use: most connections never log
	// state is readerRunning or readerParked. Whoever moves it from
	// parked to running starts the next reader goroutine.
	state atomic.Uint32
	// kick is the reason another goroutine asked this connection to close
	// (takeover, shutdown, admin); the reader sees it at its next read.
	kick   atomic.Uint32
	poller *poller // set when first parked
	parkID uint64  // c's id in poller
	// wakeAt is when the poller wakes a parked reader whatever happens
	// (its keep alive runs out), Unix ns; 0 = never.
	wakeAt atomic.Int64

	// Set while handling CONNECT, read-only afterwards. (Fields are
	// ordered to pack: an idle connection's size matters.)
	clientID string
	mount    string     // ListenerPolicy.MountPoint of the listener, "" for none
	maxQoS   packet.QoS // ListenerPolicy.MaxQoS, else 2
	// replied: reply appended output that flushReplies has not written.
	// Reader goroutine only; here to pack.
	replied     bool
	aliasMaxIn  uint16 // the Topic Alias Maximum told to the client
	sess        *session
	keepAlive   time.Duration // 1.5x the negotiated keep alive, 0 = none
	window      int           // outbound inflight limit
	ip          netip.Addr    // client address, for per-address limits
	pubRate     *tokenBucket  // nil without Options.PublishRate
	connectedAt int64         // Unix ns
	willToken   uint64        // the cluster's record of the will, if any (CleanWillKeeper)
	maxOut      uint32        // client's Maximum Packet Size (0: protocol max)
	aliasMaxOut uint16        // client's Topic Alias Maximum
	version     packet.Version
	problemInfo bool // MQTT 5 Request Problem Information
	connected   bool // CONNACK success sent
	hasIP       bool
	// parkable says a socket lies beneath nc that the poller can watch
	// while c is idle (see park.go).
	parkable bool
	// resumable says a read timeout leaves nc usable (transport.go).
	resumable bool

	// Reader goroutine only (one at a time: a parked connection's next
	// reader is started after the previous one exited).
	started      bool      // the connect timeout has been set
	lone         bool      // the packet being handled came alone in its read
	nextAliasOut uint16    // guarded by sess.mu, as aliasOut; here to pack
	readBy       time.Time // keep-alive (or connect) deadline; zero = none
	aliasIn      map[uint16]string
	// PUBLISH packets by QoS not yet added to the stats, and their
	// payload bytes: those of one read, so less than the read buffer,
	// which is under MQTT's 256 MiB packet limit (uint32: conn stays in
	// its 288 B size class).
	received      [3]uint32
	receivedBytes [3]uint32

	// Guarded by sess.mu (deliveries happen under the session lock).
	aliasOut map[string]uint16

	outMu    sync.Mutex
	flushing bool      // a flusher goroutine is running
	dead     bool      // socket failed or closed: discard writes
	latTick  uint32    // every latencySample-th delivery is timed
	ob       *outState // output waiting to be written; nil when there is none (out.go)
	// durable is the store ticket that must be durable before out may be
	// written: out holds acknowledgements or deliveries that depend on it.
	durable Ticket
}

const (
	kickNone uint32 = iota
	kickTakeover
	kickShutdown
	kickAdmin
	// kickWriteFailed: a write to the client failed. What the client sent
	// before (a DISCONNECT, say, then a close that reset the socket) is
	// still read and applied before the connection ends (lastRead).
	kickWriteFailed
)

// lastReadGrace bounds the last reads of a connection whose writes failed.
const lastReadGrace = 100 * time.Millisecond

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{srv: s, nc: nc, problemInfo: true}
	c.resumable = resumable(nc)
	c.parkable = c.resumable
	return c
}

// logger returns c's logger, which names the remote address and, once
// known, the client id.
func (c *conn) logger() *slog.Logger {
	if l := c.log.Load(); l != nil {
		return l
	}
	l := c.srv.log.With("remote", c.nc.RemoteAddr().String())
	if c.clientID != "" {
		l = l.With("client_id", c.clientID)
	}
	c.log.CompareAndSwap(nil, l)
	return c.log.Load()
}

// named adds the client id, now known, to a logger made before.
func (c *conn) named() {
	if l := c.log.Load(); l != nil {
		c.log.Store(l.With("client_id", c.clientID))
	}
}

// run serves the connection until it ends or parks; after parking, the
// goroutine that wakes the connection calls run again. A panic while
// handling this connection is logged with its stack and closes only this
// connection.
func (c *conn) run() {
	var err error
	defer func() {
		if r := recover(); r != nil {
			c.logger().Error("panic while serving connection; closing it", "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("%w: internal error", errServer)
			if h := c.srv.onPanic; h != nil {
				h(r)
			}
		}
		if err == errParked {
			return
		}
		c.finish(err)
		c.srv.connDone(c)
	}()
	err = c.readLoop()
}

// errParked ends a reader goroutine whose connection the poller now
// watches.
var errParked = errors.New("parked")

// readLoop reads as much as the socket has, decodes every complete packet in
// the buffer and handles them in order. Replies are appended to out, so the
// replies to one read's packets leave in one write.
func (c *conn) readLoop() error {
	buf := c.srv.readBuf()
	// The socket itself, read with raw system calls, for plain TCP; nil
	// reads through c.nc.
	raw := c.srv.rawReading(c.nc)
	defer func() {
		c.srv.putReadBuf(buf)
		c.srv.putRawReading(raw)
	}()
	if !c.started {
		c.started = true
		c.readBy = time.Now().Add(c.srv.opts.ConnectTimeout)
	}
	var deadline time.Time // last one set on nc
	maxSize := int(c.srv.opts.MaxPacketSize)
	got := false // bytes arrived since the deadline was last moved
	// lastData is when bytes last arrived; a new reader starts because
	// some did (or at the connection's start).
	lastData := time.Now()
	var pub *pubReader
	// After kickWriteFailed: the last reads have begun, end by
	// lastReadBy, and the latest brought data (more).
	lastRead, more := false, false
	var lastReadBy time.Time
	var settleBy time.Time // when reading for a takeover ends (readPending)
	var err error
	for {
		off := 0
		for {
			h, err := packet.ParseFixedHeader(buf[off:])
			if errors.Is(err, packet.ErrIncomplete) {
				break
			}
			if err != nil {
				return err
			}
			total := h.HeaderLen + h.Remaining
			if total > maxSize {
				return &packet.Error{Code: packet.PacketTooLarge, Msg: fmt.Sprintf("packet of %d bytes exceeds maximum %d", total, maxSize)}
			}
			if len(buf)-off < total {
				if cap(buf) < total {
					nb := make([]byte, len(buf)-off, total)
					copy(nb, buf[off:])
					buf, off = nb, 0
				}
				break
			}
			body := buf[off+h.HeaderLen : off+total]
			// A read that brought one packet alone: the client is not
			// busy (Message.inline).
			c.lone = off == 0 && total == len(buf)
			off += total
			if h.Type == packet.PUBLISH && c.sess != nil {
				// The common case decodes into one Publish per reader run
				// instead of allocating one (with its properties) each.
				if pub == nil {
					pub = new(pubReader)
				}
				if err := c.readPublish(pub, h, body); err != nil {
					return err
				}
				continue
			}
			if h.Type == packet.CONNECT && c.sess == nil {
				if err := c.connect(h, body); err != nil {
					return err
				}
				continue
			}
			p, err := packet.Decode(h, body, c.version)
			if err != nil {
				return err
			}
			if err := c.handle(p); err != nil {
				return err
			}
		}
		c.srv.stats.addReceived(&c.received, &c.receivedBytes)
		// The answers to everything this read brought, in one write,
		// before the reader reads again (and maybe waits).
		c.flushReplies()
		// Keep the unparsed tail at the front of the buffer.
		n := copy(buf[:cap(buf)], buf[off:])
		buf = buf[:n]
		if n == 0 && cap(buf) > 64<<10 {
			c.srv.putReadBuf(buf)
			buf = c.srv.readBuf() // release a large buffer once drained
		}
		if got {
			lastData = time.Now()
			if c.connected {
				got = false
				if c.keepAlive > 0 {
					c.readBy = lastData.Add(c.keepAlive)
				} else {
					c.readBy = time.Time{}
				}
			}
		}
		// The socket's deadline is the keep-alive deadline or, for a
		// connection that can park and has nothing buffered, the moment it
		// will have been idle for parkIdle, if sooner. How it is moved
		// depends on what a timeout does to the transport (transport.go).
		target := c.readBy
		if n == 0 && c.parkable && c.connected {
			if p := lastData.Add(parkIdle); target.IsZero() || p.Before(target) {
				target = p
			}
		}
		if d, set := c.readDeadline(target, deadline); set {
			c.nc.SetReadDeadline(d)
			deadline = d
		}
		if k := c.kick.Load(); k != kickNone {
			if k == kickTakeover && c.readPending(&buf, &settleBy) {
				continue // handle what the client sent before the takeover
			}
			if k != kickWriteFailed || !c.resumable || lastRead && !more {
				return errKicked
			}
			// Read on while what had already arrived comes: one read
			// returns one record of a TLS conn, which may hold more
			// (TestDisconnectBeforeWriteFailureTLS). The deadline bounds
			// it: a read past it returns only what the conn already
			// holds (crypto/tls's records), never waits for the socket.
			if !lastRead {
				lastRead, lastReadBy = true, time.Now().Add(lastReadGrace)
			}
			c.nc.SetReadDeadline(lastReadBy)
			deadline = lastReadBy
		}
		if err := c.waitOutput(); err != nil {
			return err
		}
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		var m int
		if raw != nil {
			m, err = raw.readNow(buf[len(buf):cap(buf)])
			if m > 0 && raw.waited() {
				c.srv.afterWake()
			}
		} else {
			m, err = c.nc.Read(buf[len(buf):cap(buf)])
		}
		more = m > 0
		if m > 0 {
			buf = buf[:len(buf)+m]
			got = true
			c.srv.stats.bytesReceived.Add(uint64(m))
		}
		if err != nil {
			if m > 0 {
				// Handle what arrived, then see the error again. A timeout
				// can come with data: after a TLS record's data crypto/tls
				// reads on into an alert record it has part of, and waits
				// for the rest until the deadline (TLS 1.2; transport.go).
				continue
			}
			if m == 0 && isTimeout(err) && c.kick.Load() == kickWriteFailed && !lastRead && c.resumable {
				continue // the kick's deadline: go and read what arrived
			}
			if m == 0 && isTimeout(err) && c.kick.Load() == kickNone && c.resumable {
				now := time.Now()
				if !c.readBy.IsZero() && !now.Before(c.readBy) {
					return err // the keep alive (or connect timeout) ran out
				}
				if n == 0 && c.parkable && c.connected && !now.Before(lastData.Add(parkIdle)) && c.park() {
					return errParked
				}
				// Early: data came after the deadline was set, or parking
				// failed. Clear it; the next round sets the right one.
				c.nc.SetReadDeadline(time.Time{})
				deadline = time.Time{}
				continue
			}
			if isTimeout(err) && c.kick.Load() == kickTakeover {
				continue // readPending, above, takes what is left
			}
			return err
		}
	}
}

// isTimeout reports whether err is a timeout: errors.As(err, &netErr) and
// netErr.Timeout(), without As's target escaping to the heap (a reader
// asks on every read deadline, which an idle connection meets at least
// once: the parking one).
func isTimeout(err error) bool {
	for err != nil {
		if ne, ok := err.(net.Error); ok {
			return ne.Timeout()
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		case interface{ Unwrap() []error }:
			var ne net.Error
			return errors.As(err, &ne) && ne.Timeout() // a join: rare, let As walk it
		default:
			return false
		}
	}
	return false
}

// handle dispatches one decoded packet.
func (c *conn) handle(p packet.Packet) error {
	if c.srv.debug {
		c.trace(p)
	}
	if c.sess == nil {
		// The first CONNECT went to connect (readLoop).
		return protoErr(packet.ProtocolError, "MQTT-3.1.0-1", "first packet is %s, not CONNECT", p.Type())
	}
	switch p := p.(type) {
	case *packet.Publish:
		return c.handlePublish(p, nil)
	case *packet.Puback:
		c.sess.onPuback(p.PacketID)
	case *packet.Pubrec:
		c.sess.onPubrec(p.PacketID, p.ReasonCode)
	case *packet.Pubrel:
		c.handlePubrel(p)
	case *packet.Pubcomp:
		c.sess.onPubcomp(p.PacketID)
	case *packet.Subscribe:
		return c.handleSubscribe(p)
	case *packet.Unsubscribe:
		return c.handleUnsubscribe(p)
	case *packet.Pingreq:
		c.reply(&packet.Pingresp{})
	case *packet.Disconnect:
		return c.handleDisconnect(p)
	case *packet.Connect:
		return protoErr(packet.ProtocolError, "MQTT-3.1.0-2", "second CONNECT on one connection")
	case *packet.Auth:
		return protoErr(packet.ProtocolError, "MQTT-4.12.0-1", "AUTH without an authentication method in CONNECT")
	default:
		return protoErr(packet.ProtocolError, "", "%s is not sent by clients", p.Type())
	}
	return nil
}

// kickOut asks the reader to end the connection for reason (a kick*
// value); it returns immediately.
func (c *conn) kickOut(reason uint32) {
	c.kick.CompareAndSwap(kickNone, reason)
	c.nc.SetReadDeadline(time.Now())
	c.outMu.Lock()
	c.releaseReaderLocked()
	c.outMu.Unlock()
	c.wake()
}

func (c *conn) shutdown() { c.kickOut(kickShutdown) }

// finish tears the connection down after the reader stopped with err: it
// decides about a final DISCONNECT and the will, detaches the session and
// closes the socket.
func (c *conn) finish(err error) {
	kick := c.kick.Load()
	d := c.decide(err, kick)
	c.report(d)
	// Detach first, so messages published from now on are queued for the
	// session instead of written to a connection that is going away, and
	// none is written after the DISCONNECT: it must be the last packet
	// [MQTT-3.14.4-1]. (Sent before, a delivery routed to the session
	// meanwhile followed it: TestNothingAfterServerDisconnect.)
	if c.sess != nil {
		c.srv.detach(c, d.publishWill)
	}
	if dp := c.finalDisconnect(d); dp != nil {
		c.send(dp)
	}
	c.closeAfterOutput()
}

// report counts and logs how c ended, as decided in d.
func (c *conn) report(d decision) {
	c.srv.stats.noteDisconnect(d.kind)
	if !c.srv.log.Enabled(context.Background(), d.level) {
		return // without making c's logger: 19,900 of them at a shutdown
	}
	if d.level == slog.LevelInfo {
		c.logger().Info("client disconnected", "reason", d.why)
	} else {
		c.logger().Log(context.Background(), d.level, "closing connection", "reason", d.why)
	}
}

// finalDisconnect returns the DISCONNECT that tells the client why d ends
// its connection, or nil when none is sent (MQTT 3.1.1 has no server
// DISCONNECT; d may not want one).
func (c *conn) finalDisconnect(d decision) *packet.Disconnect {
	if !d.sendDisconnect || c.version != packet.V5 || !c.connected {
		return nil
	}
	dp := &packet.Disconnect{ReasonCode: d.code}
	if d.reasonString != "" && c.problemInfo {
		dp.Properties.ReasonString = d.reasonString
		dp.Properties.Set(packet.PropReasonString)
	}
	return dp
}

// closeAfterOutput writes what c still has to write (up to drainTimeout)
// and closes the socket, gracefully when the writes got through.
func (c *conn) closeAfterOutput() {
	written := c.drain(drainTimeout)
	if c.poller != nil {
		c.poller.unregister(c)
	}
	if written {
		buf := c.srv.readBuf() // goroutine stacks stay small: a pooled buffer
		closeGracefully(c.nc, time.Now().Add(c.srv.opts.CloseLinger), buf[:cap(buf)])
		c.srv.putReadBuf(buf)
	} else {
		c.nc.Close()
	}
}

// trace logs one inbound packet at debug level, without payloads.
func (c *conn) trace(p packet.Packet) {
	switch p := p.(type) {
	case *packet.Publish:
		c.logger().Debug("received", "type", p.Type().String(), "topic", p.Topic, "qos", p.QoS, "retain", p.Retain,
			"packet_id", p.PacketID, "bytes", len(p.Payload))
	case *packet.Subscribe:
		c.logger().Debug("received", "type", p.Type().String(), "packet_id", p.PacketID, "filters", len(p.Subscriptions))
	default:
		c.logger().Debug("received", "type", p.Type().String())
	}
}
