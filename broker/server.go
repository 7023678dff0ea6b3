package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("broker: server closed")

// Version is the broker version reported in $SYS/broker/version.
var Version = "dev"

// Server is an MQTT broker. Create it with New, hand it listeners with
// Serve, stop it with Shutdown. A Server is safe for concurrent use.
type Server struct {
	opts   Options
	log    *slog.Logger
	start  time.Time
	router *router
	ret    *retainer
	ipl    *ipLimits
	stats  stats
	msgID  atomic.Uint64 // last Message.ID handed out
	// origins: where this node routed each recent Origin (origin.go).
	origins originSeen
	// marks: each recent Origin's first routing here (origin.go).
	marks originMarks
	// storeSick is set while the store reports it cannot take writes.
	storeSick atomic.Bool

	ctx    context.Context // ends at Shutdown; parent of background work
	cancel context.CancelFunc

	// mu guards the fields below. Lock order: Server.mu, then session.mu,
	// then conn.outMu. Never take Server.mu while holding a session lock.
	mu        sync.Mutex
	sessions  map[string]*session
	conns     map[*conn]struct{}
	listeners map[net.Listener]struct{}
	closing   bool
	// settling has a channel per connection being taken over, closed when
	// it has detached (takeover.go).
	settling map[*conn]chan struct{}

	// debug caches whether the logger wants debug records, so the hot path
	// pays one bool check for packet tracing.
	debug bool

	// onPanic, when set (by tests), is told about every recovered panic.
	onPanic func(any)

	connWG sync.WaitGroup // one per live connection (parked ones included)

	// poll watches parked idle connections. It is made when the first
	// connection parks (pollErr keeps a failure, so it is tried once) and
	// closed after the last connection at Shutdown.
	pollMu  sync.Mutex
	poll    *poller
	pollErr error
	// readBufs holds readBufInitial-sized read buffers: a connection
	// holds one only while its reader runs.
	readBufs sync.Pool
	// smallBlocks and bigBlocks hold output blocks, outStates the
	// connections' output bookkeeping (out.go).
	smallBlocks, bigBlocks, outStates sync.Pool
	// connacks holds CONNACKs for handleConnect: encoded before it
	// returns, each would otherwise be a few hundred bytes of garbage per
	// connection (a reconnect storm's peak memory is mostly garbage).
	connacks sync.Pool
	// connects holds the Connects CONNECTs are decoded into (connect.go),
	// for the same reason: each is 700 bytes (two property sets).
	connects sync.Pool
	// rawReadings holds the readers' raw socket readings (writenow_linux.go).
	rawReadings sync.Pool
	// wakeYield is set while a woken reader yields (afterWake).
	wakeYield atomic.Bool
	bgWG      sync.WaitGroup // $SYS publisher and other background loops
}

// New returns a Server configured by opts. It fails only when opts hold an
// impossible value.
func New(opts Options) (*Server, error) {
	opts.fill()
	if opts.MaxPacketSize > packet.MaxVarint+5 {
		return nil, errors.New("broker: MaxPacketSize above the protocol maximum 268435460")
	}
	if opts.MaxQueued < 0 {
		return nil, errors.New("broker: MaxQueued must not be negative")
	}
	if opts.MaxKeepAlive != 0 && opts.ServerKeepAlive > opts.MaxKeepAlive {
		return nil, fmt.Errorf("broker: ServerKeepAlive %d above MaxKeepAlive %d", opts.ServerKeepAlive, opts.MaxKeepAlive)
	}
	if err := checkPolicies(opts.Listeners); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		opts:      opts,
		log:       opts.Logger,
		debug:     opts.Logger.Enabled(context.Background(), slog.LevelDebug),
		start:     time.Now(),
		ctx:       ctx,
		cancel:    cancel,
		sessions:  make(map[string]*session),
		conns:     make(map[*conn]struct{}),
		listeners: make(map[net.Listener]struct{}),
	}
	s.router = newRouter(opts.Cluster)
	s.ipl = newIPLimits(opts.MaxConnectionsPerIP, opts.ConnectRatePerIP)
	s.ret = newRetainer(opts.Store)
	if opts.Store != nil {
		if err := s.restore(); err != nil {
			cancel()
			return nil, err
		}
	}
	if opts.SysInterval > 0 {
		s.bgWG.Add(1)
		go s.sysLoop()
	}
	if opts.ExpirySweep > 0 {
		s.bgWG.Add(1)
		go s.sweepLoop()
	}
	return s, nil
}

// Serve accepts connections on l until Shutdown and serves each in its own
// goroutine. Temporary accept errors (for example running out of file
// descriptors) are logged and retried with backoff instead of ending the
// loop. It returns ErrServerClosed after Shutdown, or the listener's error
// when it fails permanently.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()

	var backoff time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.isClosing() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; retrying", "err", err, "backoff", backoff)
				select {
				case <-time.After(backoff):
				case <-s.ctx.Done():
					return ErrServerClosed
				}
				continue
			}
			return err
		}
		backoff = 0
		s.serveConn(nc)
	}
}

// isTemporary reports errors an accept loop should survive: descriptor
// exhaustion and aborted handshakes.
func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	if errors.As(err, &t) && t.Temporary() {
		return true
	}
	return errors.Is(err, errTooManyFiles)
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// ServeConn serves one already accepted connection, for listeners that are
// not net.Listeners (tests, in-process pipes). It returns immediately.
func (s *Server) ServeConn(nc net.Conn) { s.serveConn(nc) }

func (s *Server) serveConn(nc net.Conn) {
	ip, hasIP := addrIP(nc.RemoteAddr())
	if hasIP {
		if ok, why := s.ipl.admit(ip, time.Now()); !ok {
			s.log.Warn("refusing connection", "remote", nc.RemoteAddr().String(), "reason", why)
			s.stats.noteDisconnect("limit")
			nc.Close()
			return
		}
	}
	c := newConn(s, nc)
	c.ip, c.hasIP = ip, hasIP
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		if hasIP {
			s.ipl.release(ip)
		}
		nc.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.connWG.Add(1)
	s.mu.Unlock()
	go c.run()
}

// poller returns the poller for parked connections, making it on first
// use; nil when there is none (no epoll, or shut down).
func (s *Server) poller() *poller {
	s.pollMu.Lock()
	defer s.pollMu.Unlock()
	if s.poll == nil && s.pollErr == nil {
		s.poll, s.pollErr = newPoller()
		if s.pollErr != nil {
			s.log.Info("idle connections keep their reader goroutine", "reason", s.pollErr)
		}
	}
	return s.poll
}

func (s *Server) closePoller() {
	s.pollMu.Lock()
	defer s.pollMu.Unlock()
	if s.poll != nil {
		s.poll.close()
		s.poll = nil
	}
	s.pollErr = ErrServerClosed
}

// connDone forgets a finished connection.
func (s *Server) connDone(c *conn) {
	if c.hasIP {
		s.ipl.release(c.ip)
	}
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.connWG.Done()
}

// readBuf returns an empty read buffer of readBufInitial bytes capacity.
func (s *Server) readBuf() []byte {
	if b, ok := s.readBufs.Get().(*[readBufInitial]byte); ok {
		return b[:0]
	}
	return make([]byte, 0, readBufInitial)
}

// putReadBuf recycles b if it has the initial size; grown buffers are left
// to the garbage collector so a burst of large packets does not pin memory.
// (The pool holds array pointers, which need no allocation to put back.)
func (s *Server) putReadBuf(b []byte) {
	if cap(b) == readBufInitial {
		s.readBufs.Put((*[readBufInitial]byte)(b[:readBufInitial]))
	}
}

// Shutdown stops accepting, sends MQTT 5 clients DISCONNECT 0x8B (Server
// shutting down), flushes pending writes and closes every connection
// gracefully (its end of the stream first, then up to a second for the
// client to close its own, goodbye.go; parked connections are ended
// from Shutdown's goroutine and the poller, shutdown.go). Wills
// of connected clients are not published: the clients did nothing wrong.
// It waits until all connections are closed or ctx ends, returning ctx's
// error in the latter case. Either way it closes the Store last (a final
// sync), and returns the Store's error too.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil
	}
	s.closing = true
	for l := range s.listeners {
		l.Close()
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	s.cancel()

	// Parked connections end here; the others are woken to end
	// themselves (shutdown.go).
	lingering, others := s.endParked(conns)
	bound := lingerBound(lingering, s.opts.CloseLinger)
	defer bound.Stop()
	for _, c := range others {
		c.shutdown()
	}
	done := make(chan struct{})
	go func() {
		s.connWG.Wait()
		s.bgWG.Wait()
		close(done)
	}()
	select {
	case <-done:
		s.closePoller()
		s.closeSessions()
		if s.opts.Store != nil {
			return s.opts.Store.Close()
		}
		return nil
	case <-ctx.Done():
		endLingering(lingering)
		for _, c := range others {
			c.nc.Close()
		}
		go func() {
			<-done
			s.closePoller()
		}()
		// Closed even so: its final sync is what sync intervals and "none"
		// count on, and the process usually exits next. Connections still
		// ending meet a closed store: what they had not acknowledged
		// stays unacknowledged.
		if s.opts.Store != nil {
			return errors.Join(ctx.Err(), s.opts.Store.Close())
		}
		return ctx.Err()
	}
}

// closeSessions stops the expiry and will timers of offline sessions.
func (s *Server) closeSessions() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ss := range s.sessions {
		ss.stopTimers()
	}
}
