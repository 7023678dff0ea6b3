package rawclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-mqtt/roost/internal/wsconn"
)

// Transport is one way of carrying MQTT's byte stream to a broker.
type Transport string

// The transports test suites run over.
const (
	TCP   Transport = "tcp"   // mqtt://host:port
	TLS   Transport = "tls"   // mqtts://host:port
	WS    Transport = "ws"    // ws://host:port/path
	WSS   Transport = "wss"   // wss://host:port/path
	Proxy Transport = "proxy" // mqtt+proxy://host:port: TCP, a PROXY protocol v1 header first
)

// Transports returns every transport, TCP first.
func Transports() []Transport { return []Transport{TCP, TLS, WS, WSS, Proxy} }

// ProxyScheme is the URL scheme of TCP with a PROXY protocol header. It is
// the test client's notation, not a scheme Roost's configuration knows
// (there the header is the listener option proxy_protocol).
const ProxyScheme = "mqtt+proxy"

// URL returns the URL DialConn takes for a listener of transport tr at
// hostport (WebSocket on path /mqtt, which DialConn also assumes when a
// ws:// or wss:// URL has none).
func (tr Transport) URL(hostport string) string {
	switch tr {
	case TLS:
		return "mqtts://" + hostport
	case WS:
		return "ws://" + hostport + "/mqtt"
	case WSS:
		return "wss://" + hostport + "/mqtt"
	case Proxy:
		return ProxyScheme + "://" + hostport
	}
	return "mqtt://" + hostport
}

// TransportOf returns the transport of a URL DialConn takes; a bare
// host:port is TCP.
func TransportOf(target string) (Transport, error) {
	scheme, _, ok := strings.Cut(target, "://")
	if !ok {
		return TCP, nil
	}
	switch scheme {
	case "mqtt", "tcp":
		return TCP, nil
	case "mqtts", "tls", "ssl":
		return TLS, nil
	case "ws":
		return WS, nil
	case "wss":
		return WSS, nil
	case ProxyScheme:
		return Proxy, nil
	}
	return "", fmt.Errorf("rawclient: %q: scheme must be mqtt, mqtts, ws, wss or %s", target, ProxyScheme)
}

// Dialer opens connections over any Transport.
type Dialer struct {
	// TLS configures mqtts:// and wss:// (the CA to trust, mostly). Nil
	// means the system roots. ServerName defaults to the URL's host.
	TLS *tls.Config
}

// Dial connects to target, a URL of any transport (see Transport.URL) or
// a bare host:port for TCP. ctx bounds the dial and every handshake.
func (d Dialer) Dial(ctx context.Context, target string) (*Conn, error) {
	nc, err := d.DialConn(ctx, target)
	if err != nil {
		return nil, err
	}
	return newConn(nc), nil
}

// DialConn opens the byte stream to target without speaking MQTT. On
// every transport the conn behaves like a TCP socket in the ways tests
// depend on:
//
//   - A read deadline ends the Read that waits, nothing else: a later
//     Read may still get data. (gorilla/websocket fails a connection for
//     good once a read timed out, so WebSocket conns are read ahead by a
//     goroutine of their own, at most 64 KiB ahead.)
//   - The end of the stream reads as io.EOF (or a reset): on WebSocket,
//     any close frame and a TCP close without one both read as io.EOF.
//   - A Write after the server closed a WebSocket fails with an error
//     that is net.ErrClosed.
func (d Dialer) DialConn(ctx context.Context, target string) (net.Conn, error) {
	tr, err := TransportOf(target)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(target)
	if err != nil || !strings.Contains(target, "://") {
		u = &url.URL{Host: target} // a bare host:port
	}
	nc, err := d.dial(ctx, tr, u)
	if err != nil {
		return nil, fmt.Errorf("rawclient: dial %s: %w", target, err)
	}
	return nc, nil
}

func (d Dialer) dial(ctx context.Context, tr Transport, u *url.URL) (net.Conn, error) {
	var nd net.Dialer
	switch tr {
	case TCP:
		return nd.DialContext(ctx, "tcp", u.Host)
	case Proxy:
		nc, err := nd.DialContext(ctx, "tcp", u.Host)
		if err != nil {
			return nil, err
		}
		if err := writeProxyHeader(ctx, nc); err != nil {
			nc.Close()
			return nil, fmt.Errorf("PROXY header: %w", err)
		}
		return nc, nil
	case TLS:
		td := tls.Dialer{Config: d.tlsConfig(u)}
		return td.DialContext(ctx, "tcp", u.Host)
	}
	wd := websocket.Dialer{Subprotocols: []string{"mqtt"}, NetDialContext: nd.DialContext}
	if tr == WSS {
		wd.TLSClientConfig = d.tlsConfig(u)
	}
	if u.Path == "" {
		u.Path = "/mqtt"
	}
	ws, resp, err := wd.DialContext(ctx, u.String(), nil)
	if err != nil {
		if resp != nil {
			err = fmt.Errorf("%w (HTTP %s)", err, resp.Status)
		}
		return nil, err
	}
	return newReadAhead(wsconn.New(ws)), nil
}

func (d Dialer) tlsConfig(u *url.URL) *tls.Config {
	c := &tls.Config{}
	if d.TLS != nil {
		c = d.TLS.Clone()
	}
	if c.ServerName == "" {
		c.ServerName = u.Hostname()
	}
	return c
}

// writeProxyHeader sends a PROXY protocol v1 header naming the conn's own
// addresses, as a transparent proxy in front of the broker would.
func writeProxyHeader(ctx context.Context, nc net.Conn) error {
	src, dst := nc.LocalAddr().(*net.TCPAddr), nc.RemoteAddr().(*net.TCPAddr)
	fam := "TCP4"
	if src.IP.To4() == nil {
		fam = "TCP6"
	}
	if d, ok := ctx.Deadline(); ok {
		nc.SetWriteDeadline(d)
		defer nc.SetWriteDeadline(time.Time{})
	}
	_, err := fmt.Fprintf(nc, "PROXY %s %s %s %d %d\r\n", fam, src.IP, dst.IP, src.Port, dst.Port)
	return err
}

// readAheadMax bounds what a readAheadConn holds that nobody read yet, so
// that a client that stops reading still pushes back on the server.
const readAheadMax = 64 << 10

// readAheadConn reads its inner conn in a goroutine of its own so that a
// read deadline only ends the wait of one Read, as on a TCP socket.
type readAheadConn struct {
	net.Conn
	mu       sync.Mutex
	buf      []byte
	err      error // the inner conn's read error, returned once buf is empty
	deadline time.Time
	closed   bool
	changed  chan struct{} // closed and replaced whenever the fields above change
}

func newReadAhead(c net.Conn) *readAheadConn {
	r := &readAheadConn{Conn: c, changed: make(chan struct{})}
	go r.pump()
	return r
}

func (r *readAheadConn) signalLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *readAheadConn) pump() {
	b := make([]byte, 16<<10)
	for {
		n, err := r.Conn.Read(b)
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			// Any close frame, or the TCP connection ending without one
			// (1006), is the end of the stream.
			err = fmt.Errorf("%w (%w)", io.EOF, err)
		}
		r.mu.Lock()
		r.buf = append(r.buf, b[:n]...)
		if err != nil {
			r.err = err
		}
		r.signalLocked()
		for err == nil && len(r.buf) >= readAheadMax && !r.closed {
			ch := r.changed
			r.mu.Unlock()
			<-ch
			r.mu.Lock()
		}
		r.mu.Unlock()
		if err != nil {
			return
		}
	}
}

func (r *readAheadConn) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		switch {
		case r.closed:
			return 0, r.opError("read", net.ErrClosed)
		case len(r.buf) > 0:
			n := copy(p, r.buf)
			r.buf = r.buf[n:]
			if len(r.buf) == 0 {
				r.buf = nil
			}
			r.signalLocked() // the pump may be waiting for room
			return n, nil
		case r.err != nil:
			return 0, r.err
		case !r.deadline.IsZero() && !time.Now().Before(r.deadline):
			return 0, r.opError("read", os.ErrDeadlineExceeded)
		}
		ch := r.changed
		var timer *time.Timer
		var expired <-chan time.Time
		if !r.deadline.IsZero() {
			timer = time.NewTimer(time.Until(r.deadline))
			expired = timer.C
		}
		r.mu.Unlock()
		select {
		case <-ch:
		case <-expired:
		}
		if timer != nil {
			timer.Stop()
		}
		r.mu.Lock()
	}
}

func (r *readAheadConn) Write(p []byte) (int, error) {
	n, err := r.Conn.Write(p)
	if errors.Is(err, websocket.ErrCloseSent) {
		err = r.opError("write", fmt.Errorf("%w (%w)", net.ErrClosed, err))
	}
	return n, err
}

func (r *readAheadConn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "websocket", Source: r.LocalAddr(), Addr: r.RemoteAddr(), Err: err}
}

func (r *readAheadConn) SetReadDeadline(t time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.deadline = t
	r.signalLocked()
	return nil
}

func (r *readAheadConn) SetDeadline(t time.Time) error {
	r.SetReadDeadline(t)
	return r.Conn.SetWriteDeadline(t)
}

func (r *readAheadConn) Close() error {
	r.mu.Lock()
	r.closed = true
	r.signalLocked()
	r.mu.Unlock()
	return r.Conn.Close()
}
