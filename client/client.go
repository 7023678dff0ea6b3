package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// Client is an MQTT client that keeps one connection up, reconnecting as
// needed, and keeps its session state (packet identifiers, unacknowledged
// publishes, subscriptions) across connections. Its methods are safe for
// concurrent use.
type Client struct {
	opts Options

	mu      sync.Mutex // guards everything below, and conn.aliasOut
	state   clientState
	sess    session
	cn      *conn         // current connection, nil while offline
	upCh    chan struct{} // closed while connected; replaced when the connection goes down
	stopErr error         // why the client stopped

	stop     chan struct{}   // closed by shutdown
	ctx      context.Context // ends at shutdown; bounds connection attempts
	cancel   context.CancelFunc
	stopOnce sync.Once
	mgrDone  chan struct{} // closed when the connection manager has exited
	done     chan struct{} // closed when every goroutine has exited
	disp     *dispatcher

	req requester

	dropped atomic.Uint64
	debug   bool // Logger has debug enabled

	acks ackQueue // Options.ManualAck

	// bridgeRefused is set once a server refused the bridge bit
	// (Options.Bridge): later CONNECTs go without it.
	bridgeRefused atomic.Bool
	// nextServer is where a RoundRobin connection attempt starts.
	nextServer int
}

type clientState int

const (
	stateNew clientState = iota
	stateRunning
	stateClosed
)

// New returns a Client for opts without connecting: call Start or Connect.
// Subscribe and Publish may be called before, their packets wait until the
// connection is up. New fails if opts names no server, a server URL is
// invalid, or the Store cannot be loaded.
func New(opts Options) (*Client, error) {
	if len(opts.Servers) == 0 {
		return nil, errors.New("client: Options.Servers is empty")
	}
	for _, s := range opts.Servers {
		if _, err := parseServer(s); err != nil {
			return nil, err
		}
	}
	opts.fill()
	if opts.Version != packet.V5 && opts.Version != packet.V311 && opts.Version != packet.V31 {
		return nil, fmt.Errorf("client: unsupported protocol version %v", opts.Version)
	}
	if opts.Version == packet.V31 && (len(opts.ClientID) > 23 || opts.ClientID == "") {
		// MQTT 3.1 servers refuse others (CONNACK 2).
		return nil, fmt.Errorf("client: MQTT 3.1 needs a client id of 1 to 23 bytes, got %q", opts.ClientID)
	}
	c := &Client{
		opts:    opts,
		upCh:    make(chan struct{}),
		stop:    make(chan struct{}),
		mgrDone: make(chan struct{}),
		done:    make(chan struct{}),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.debug = opts.Logger.Enabled(context.Background(), slog.LevelDebug)
	c.sess.init()
	c.disp = newDispatcher(c)
	if opts.Store != nil {
		if err := c.restore(); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// ClientID returns the client identifier sent in CONNECT.
func (c *Client) ClientID() string { return c.opts.ClientID }

// Start starts connecting in the background and returns at once. The
// client keeps (re)connecting with backoff until Disconnect, reporting
// progress to Options.OnStatus. Start on a started or closed client does
// nothing.
func (c *Client) Start() {
	c.start(nil)
}

// Connect starts the client and waits for the first connection: it tries
// each server once and returns nil when one accepted, after which the
// client reconnects by itself whenever the connection is lost. If no server
// accepts, or ctx ends first, Connect returns the error (a *ReasonError
// when the server refused the CONNECT) and the client is closed.
func (c *Client) Connect(ctx context.Context) error {
	first := make(chan error, 1)
	if !c.start(first) {
		return ErrClosed
	}
	select {
	case err := <-first:
		if err != nil {
			c.shutdown(err)
			<-c.mgrDone
		}
		return err
	case <-ctx.Done():
		c.shutdown(ctx.Err())
		<-c.mgrDone
		return fmt.Errorf("client: connect: %w", ctx.Err())
	}
}

func (c *Client) start(first chan error) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateNew {
		return false
	}
	c.state = stateRunning
	go c.disp.run()
	go c.manage(first)
	go func() {
		<-c.mgrDone
		<-c.disp.done
		close(c.done)
	}()
	return true
}

// AwaitConnection waits until the client is connected. It returns
// ErrClosed if the client stops first, and ctx.Err() if ctx ends first.
func (c *Client) AwaitConnection(ctx context.Context) error {
	c.mu.Lock()
	up, state := c.upCh, c.state
	c.mu.Unlock()
	if state == stateClosed {
		return ErrClosed
	}
	select {
	case <-up:
		return nil
	case <-c.stop:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Connected reports whether a connection is up right now.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cn != nil
}

// Disconnect sends DISCONNECT after everything already handed to the
// connection (QoS 0 publishes included), closes the connection and stops
// reconnecting. Operations still waiting fail with ErrClosed; QoS 1/2
// publishes stay in Options.Store, if any, for the next Client. It waits
// for the connection goroutines to end, or for ctx, after which the
// connection is closed without waiting further.
//
// Disconnect never waits for a message handler, so a handler may call it.
// The dispatcher goroutine exits once the running handler returns; Done
// tells when.
func (c *Client) Disconnect(ctx context.Context) error {
	return c.DisconnectWithProperties(ctx, packet.Properties{})
}

// DisconnectWithProperties is Disconnect with MQTT 5 DISCONNECT
// properties: Session Expiry Interval (how long the server keeps the
// session from now; it cannot be set when CONNECT sent 0
// [MQTT-3.14.2-2]), Reason String and User Properties. With other
// properties, or any on a 3.1.1 client (ErrV5Only), it returns an error
// and does nothing.
func (c *Client) DisconnectWithProperties(ctx context.Context, props packet.Properties) error {
	if props.Present != 0 || len(props.User) > 0 || len(props.SubscriptionIDs) > 0 {
		allowed := uint64(1)<<packet.PropSessionExpiry | 1<<packet.PropReasonString | 1<<packet.PropUserProperty
		switch {
		case c.opts.Version != packet.V5:
			return fmt.Errorf("client: disconnect properties: %w", ErrV5Only)
		case props.Present&^allowed != 0 || len(props.SubscriptionIDs) > 0:
			return errors.New("client: disconnect: only Session Expiry Interval, Reason String and User Property allowed")
		case props.Has(packet.PropSessionExpiry) && props.SessionExpiry != 0 && c.opts.SessionExpiry == 0:
			return errors.New("client: disconnect: Session Expiry Interval was 0 at CONNECT and cannot be raised [MQTT-3.14.2-2]")
		}
	}
	c.mu.Lock()
	if c.state == stateNew {
		c.state = stateClosed
		c.mu.Unlock()
		c.shutdown(nil)
		close(c.mgrDone)
		close(c.disp.done)
		close(c.done)
		return nil
	}
	c.sess.closing = true
	cn := c.cn
	c.mu.Unlock()
	if cn != nil {
		cn.finish(&packet.Disconnect{ReasonCode: packet.Success, Properties: props})
		select {
		case <-cn.dead:
		case <-ctx.Done():
		}
	}
	c.shutdown(nil)
	select {
	case <-c.mgrDone:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Reconnect ends the current connection with a DISCONNECT (reason 0: the
// server keeps the session and does not publish the will) and connects
// again at once, from the first server, or with RoundRobin the next one.
// The session carries over as after any lost connection. Without a
// connection it does nothing. A bridge uses it to go back to its main
// server once that is reachable again.
func (c *Client) Reconnect() {
	c.mu.Lock()
	cn := c.cn
	c.mu.Unlock()
	if cn != nil {
		cn.finish(&packet.Disconnect{ReasonCode: packet.Success})
	}
}

// Done returns a channel that is closed once the client has stopped and
// all its goroutines, the handler dispatcher included, have exited.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns why the client stopped: nil while running and after
// Disconnect, the last connection error after giving up.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopErr
}

// Stats are counters for monitoring.
type Stats struct {
	Dropped  uint64 // QoS 0 messages dropped because handlers were behind
	Pending  int    // messages and events waiting for the dispatcher
	Queued   int    // operations waiting for a connection or for quota
	Inflight int    // packet identifiers in use
}

// Stats returns the current counters.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	s := Stats{Dropped: c.dropped.Load(), Queued: len(c.sess.queue), Inflight: len(c.sess.inflight)}
	c.mu.Unlock()
	s.Pending = c.disp.len()
	return s
}

// shutdown stops the client once: the manager exits, waiting operations
// fail, the dispatcher delivers Disconnected and exits.
func (c *Client) shutdown(err error) {
	c.stopOnce.Do(func() {
		c.mu.Lock()
		c.state = stateClosed
		c.stopErr = err
		cn := c.cn
		c.sess.failAll(ErrClosed)
		c.mu.Unlock()
		close(c.stop)
		c.cancel()
		if cn != nil {
			cn.close(ErrClosed)
		}
	})
}

// manage is the connection manager: connect, wait for the connection to
// die, back off, repeat. first, when non-nil, receives the outcome of the
// first pass over the servers.
func (c *Client) manage(first chan error) {
	defer close(c.mgrDone)
	defer func() {
		c.mu.Lock()
		err := c.stopErr
		c.mu.Unlock()
		c.disp.status(Status{Event: Disconnected, Err: err})
		c.disp.close()
	}()
	failures := 0
	for {
		up, err := c.connectOnce(&first)
		if first != nil {
			first <- err
			return
		}
		if c.stopped() {
			return
		}
		if up {
			if c.opts.Reconnect.Disabled {
				// A lost connection stops the client: connecting again
				// would take the id back from a connection that took it
				// over, and that one would take it back in turn.
				c.shutdown(err)
				return
			}
			failures = 0
			continue // the connection went down; reconnect at once once
		}
		failures++
		b := c.opts.Reconnect
		if b.Disabled || (b.MaxAttempts > 0 && failures >= b.MaxAttempts) {
			c.shutdown(err)
			return
		}
		n := failures
		if permanent(err) {
			// Refused credentials or protocol will not be accepted sooner
			// for asking often; wait the longest, but keep trying: an
			// operator may fix the account.
			n = 64
		}
		d := b.delay(n, mrand.Float64())
		c.disp.status(Status{Event: Reconnecting, Attempt: failures + 1, Delay: d})
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-c.stop:
			t.Stop()
			return
		}
	}
}

// stopped reports whether the client is stopping: shut down, or
// Disconnect called (which shuts down once DISCONNECT is flushed).
func (c *Client) stopped() bool {
	select {
	case <-c.stop:
		return true
	default:
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sess.closing
}

// connectOnce tries the servers in order; when one accepts it runs the
// connection until it dies and returns up true with why it died (nil for
// an orderly end), else up false and the last error. See runConn for
// first.
func (c *Client) connectOnce(first *chan error) (up bool, err error) {
	n := len(c.opts.Servers)
	for i := range n {
		idx := i
		if c.opts.RoundRobin {
			idx = (c.nextServer + i) % n
		}
		server := c.opts.Servers[idx]
		if c.stopped() {
			return false, ErrClosed
		}
		c.disp.status(Status{Event: Connecting, Server: server})
		var cn *conn
		cn, err = c.dialServer(server)
		if err != nil {
			c.opts.Logger.Debug("connect failed", "server", server, "err", err)
			c.disp.status(Status{Event: ConnectionLost, Server: server, Err: err})
			continue
		}
		// Only the connecting goroutine reads and writes it.
		c.nextServer = (idx + 1) % n
		return true, c.runConn(cn, first)
	}
	return false, err
}

// runConn installs cn as the current connection and waits for it to die,
// and returns why (nil for an orderly end). If *first is non-nil it is
// told nil once cn is up, and cleared.
func (c *Client) runConn(cn *conn, first *chan error) error {
	c.mu.Lock()
	if c.state == stateClosed {
		c.mu.Unlock()
		cn.close(ErrClosed)
		cn.wg.Wait()
		return ErrClosed
	}
	c.opts.Logger.Debug("connected", "server", cn.server, "session_present", cn.connack.SessionPresent,
		"inflight", len(c.sess.inflight), "queued", len(c.sess.queue))
	c.disp.status(Status{Event: Connected, Server: cn.server, SessionPresent: cn.connack.SessionPresent, Connack: cn.connack})
	c.disp.connUp(cn.connack)
	c.connUp(cn)
	c.mu.Unlock()
	cn.startLoops()
	if *first != nil {
		*first <- nil
		*first = nil
	}

	select {
	case <-cn.dead:
	case <-c.stop:
		cn.close(ErrClosed)
	}
	cn.wg.Wait()

	c.mu.Lock()
	c.cn = nil
	c.upCh = make(chan struct{})
	closing := c.sess.closing
	c.mu.Unlock()
	err := cn.err
	c.opts.Logger.Debug("connection closed", "server", cn.server, "err", err)
	if closing || errors.Is(err, errFinished) {
		err = nil
	}
	if closing {
		c.disp.connDown(nil)
		return nil
	}
	c.disp.status(Status{Event: ConnectionLost, Server: cn.server, Err: err})
	c.disp.connDown(err)
	return err
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
