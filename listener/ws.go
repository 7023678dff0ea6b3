package listener

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Subprotocols are the WebSocket subprotocols MQTT clients offer: "mqtt"
// for MQTT 3.1.1 and 5.0 [MQTT-6.0.0-3], "mqttv3.1" for MQTT 3.1.
var Subprotocols = []string{"mqtt", "mqttv3.1"}

// DefaultPath is the HTTP path MQTT clients use unless told otherwise.
const DefaultPath = "/mqtt"

// WSOptions configure WebSocket.
type WSOptions struct {
	// Paths the endpoint answers on. Default []string{"/mqtt"}.
	Paths []string
	// AnyPath accepts every path.
	AnyPath bool
	// AllowedOrigins, when not empty, are the only Origin header values
	// (such as "https://example.com") a browser may connect from. Requests
	// without Origin (not from a browser) are always allowed.
	AllowedOrigins []string
	// TrustedProxies are the peers whose X-Forwarded-For or X-Real-IP
	// header names the real client.
	TrustedProxies []netip.Prefix
	// MaxMessageSize is the largest WebSocket message accepted, in bytes.
	// A client sending a larger one gets close code 1009 (Message Too
	// Big). Set it from the broker's MaxPacketSize with WSMessageLimit.
	// Default WSMessageLimit(1 MiB).
	MaxMessageSize int64
	// TLS, when set, serves wss: TLS with its certificates.
	TLS *CertManager
	// Identity picks the client name from a verified TLS client
	// certificate; the conns then implement CertIdentity.
	Identity Identity
	// HandshakeTimeout bounds the TLS handshake and HTTP upgrade.
	// Default 10s.
	HandshakeTimeout time.Duration
	// FileDir, when set, is a directory whose files are served to plain
	// HTTP GET and HEAD requests (those that are not WebSocket upgrades),
	// on any path, as mosquitto's http_dir: a web page and the script
	// that connects back over MQTT can come from the broker itself.
	// Directories are not listed; names cannot leave FileDir.
	FileDir string
	// Logger gets refused upgrades (info) and HTTP server errors (debug).
	// Default slog.Default().
	Logger *slog.Logger
}

// WSMessageLimit is the WebSocket message limit for a broker whose largest
// packet is maxPacket bytes: one packet, plus slack for small packets a
// client put in the same message.
func WSMessageLimit(maxPacket uint32) int64 { return int64(maxPacket) + 64<<10 }

// WebSocket returns a listener that serves MQTT over WebSocket on inner's
// conns: an http.Server upgrades requests on the configured paths and
// Accept returns the upgraded conns, whose Read gives the payloads of the
// client's binary messages as one byte stream and whose Write sends one
// binary message. Requests that cannot be served get a plain-text HTTP
// error saying why (wrong path, no upgrade, unknown subprotocol, origin
// not allowed) and are logged. Close stops the http.Server; upgraded conns
// stay open.
func WebSocket(inner net.Listener, o WSOptions) net.Listener {
	if len(o.Paths) == 0 {
		o.Paths = []string{DefaultPath}
	}
	if o.MaxMessageSize <= 0 {
		o.MaxMessageSize = WSMessageLimit(1 << 20)
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.TLS != nil {
		cfg := o.TLS.Config()
		inner = tls.NewListener(inner, cfg)
	}
	l := &wsListener{
		addr:   inner.Addr(),
		opts:   o,
		conns:  make(chan net.Conn),
		done:   make(chan struct{}),
		served: make(chan struct{}),
	}
	l.up = websocket.Upgrader{
		HandshakeTimeout: o.HandshakeTimeout,
		ReadBufferSize:   4096,
		WriteBufferPool:  &writePool,
		// Origin is checked in ServeHTTP, with a message the client sees.
		CheckOrigin: func(*http.Request) bool { return true },
		Error:       func(w http.ResponseWriter, _ *http.Request, code int, err error) { http.Error(w, err.Error(), code) },
	}
	l.srv = &http.Server{
		Handler:           l,
		ReadHeaderTimeout: o.HandshakeTimeout, // also bounds the TLS handshake
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          log.New(slogWriter{o.Logger}, "", 0),
	}
	go func() {
		defer close(l.served)
		l.err = l.srv.Serve(inner)
	}()
	return l
}

// writePool shares write buffers among WebSocket conns: an idle conn holds
// none.
var writePool sync.Pool

type wsListener struct {
	addr  net.Addr
	opts  WSOptions
	up    websocket.Upgrader
	srv   *http.Server
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once

	served chan struct{} // closed when srv.Serve returned; err is then set
	err    error
}

// Accept returns the next upgraded conn; after Close, net.ErrClosed; if
// the HTTP server stopped on its own, its error.
func (l *wsListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	case <-l.served:
		return nil, fmt.Errorf("websocket listener: %w", l.err)
	}
}

func (l *wsListener) Close() error {
	err := net.ErrClosed
	l.once.Do(func() {
		close(l.done)
		err = l.srv.Close()
	})
	return err
}

func (l *wsListener) Addr() net.Addr { return l.addr }

func (l *wsListener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	remote := l.clientAddr(r)
	refuse := func(code int, msg string) {
		l.opts.Logger.Info("websocket connection refused", "remote", remote.String(), "path", r.URL.Path, "status", code, "reason", msg)
		http.Error(w, "roost: "+msg, code)
	}
	if l.opts.FileDir != "" && !websocket.IsWebSocketUpgrade(r) {
		serveFile(w, r, l.opts.FileDir)
		return
	}
	if !l.opts.AnyPath && !slices.Contains(l.opts.Paths, r.URL.Path) {
		refuse(http.StatusNotFound, fmt.Sprintf("no MQTT endpoint at %q; this listener serves MQTT over WebSocket at %s", r.URL.Path, strings.Join(l.opts.Paths, ", ")))
		return
	}
	if !websocket.IsWebSocketUpgrade(r) {
		w.Header().Set("Upgrade", "websocket")
		refuse(http.StatusUpgradeRequired, "this is an MQTT over WebSocket endpoint; connect with an MQTT client to ws:// or wss://")
		return
	}
	if origin := r.Header.Get("Origin"); origin != "" && len(l.opts.AllowedOrigins) > 0 && !originAllowed(origin, l.opts.AllowedOrigins) {
		refuse(http.StatusForbidden, fmt.Sprintf("origin %q is not allowed", origin))
		return
	}
	proto, ok := pickSubprotocol(websocket.Subprotocols(r))
	if !ok {
		refuse(http.StatusBadRequest, fmt.Sprintf("none of the offered WebSocket subprotocols %q is MQTT; offer %q (or none)", websocket.Subprotocols(r), Subprotocols))
		return
	}
	var h http.Header
	if proto != "" {
		h = http.Header{"Sec-Websocket-Protocol": {proto}}
	}
	ws, err := l.up.Upgrade(w, r, h)
	if err != nil {
		// Upgrade has already answered with an HTTP error.
		l.opts.Logger.Info("websocket upgrade failed", "remote", remote.String(), "err", err)
		return
	}
	ws.SetReadLimit(l.opts.MaxMessageSize)
	c := &wsConn{ws: ws, remote: remote}
	if r.TLS != nil && l.opts.Identity != IdentityNone && len(r.TLS.VerifiedChains) > 0 {
		c.name, c.named = certName(r.TLS.VerifiedChains[0][0], l.opts.Identity)
	}
	select {
	case l.conns <- c:
	case <-l.done:
		c.Close()
	}
}

// pickSubprotocol chooses the first subprotocol the client offered that
// MQTT uses, in the client's spelling; offering none is fine (older
// WeChat mini program clients and some proxies send none). ok is false
// when the client offered only others.
func pickSubprotocol(offered []string) (proto string, ok bool) {
	if len(offered) == 0 {
		return "", true
	}
	for _, p := range offered {
		for _, s := range Subprotocols {
			if strings.EqualFold(p, s) {
				return p, true
			}
		}
	}
	return "", false
}

func originAllowed(origin string, allowed []string) bool {
	for _, a := range allowed {
		if a == "*" || strings.EqualFold(strings.TrimSuffix(a, "/"), origin) {
			return true
		}
	}
	return false
}

// clientAddr is the request's peer address or, when that is a trusted
// proxy, the client address it forwarded.
func (l *wsListener) clientAddr(r *http.Request) net.Addr {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return stringAddr(r.RemoteAddr)
	}
	addr := net.TCPAddrFromAddrPort(peer)
	if !trusted(peer.Addr(), l.opts.TrustedProxies) {
		return addr
	}
	if ip, ok := forwardedFor(r.Header, l.opts.TrustedProxies); ok {
		return net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, 0))
	}
	return addr
}

func trusted(ip netip.Addr, nets []netip.Prefix) bool {
	ip = ip.Unmap()
	for _, p := range nets {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// forwardedFor reads X-Forwarded-For from the right: each hop appends the
// address it received from, so the first address that is not a trusted
// proxy is the client (anything left of it the client could have forged).
// Without X-Forwarded-For it reads X-Real-IP.
func forwardedFor(h http.Header, proxies []netip.Prefix) (netip.Addr, bool) {
	var hops []string
	for _, v := range h.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(v, ",")...)
	}
	var last netip.Addr
	for i := len(hops) - 1; i >= 0; i-- {
		ip, ok := parseHop(hops[i])
		if !ok {
			return netip.Addr{}, false
		}
		if !trusted(ip, proxies) {
			return ip, true
		}
		last = ip
	}
	if last.IsValid() {
		return last, true // every hop is a trusted proxy: the first one is the client
	}
	return parseHop(h.Get("X-Real-IP"))
}

// parseHop accepts an address with or without a port.
func parseHop(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if ip, err := netip.ParseAddr(s); err == nil {
		return ip.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	return netip.Addr{}, false
}

type stringAddr string

func (a stringAddr) Network() string { return "tcp" }
func (a stringAddr) String() string  { return string(a) }

// slogWriter turns the http.Server's log lines (mostly TLS handshake
// errors from scanners and bad clients) into debug logs.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Debug("websocket listener: " + strings.TrimSpace(string(p)))
	return len(p), nil
}

// wsConn presents a WebSocket connection as the MQTT byte stream.
type wsConn struct {
	ws     *websocket.Conn
	remote net.Addr
	r      io.Reader // the current message, nil between messages
	wmu    sync.Mutex
	once   sync.Once
	name   string
	named  bool
}

// errTextMessage ends a connection that sent a text message.
var errTextMessage = errors.New("websocket: text message received; MQTT needs binary messages [MQTT-6.0.0-1]")

// Read returns bytes of the client's binary messages in order, crossing
// message boundaries as needed: an MQTT packet may span messages and a
// message may hold several packets [MQTT-6.0.0-2]. A close frame from the
// client ends the stream with io.EOF.
func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			typ, r, err := c.ws.NextReader()
			if err != nil {
				if _, ok := err.(*websocket.CloseError); ok {
					return 0, io.EOF
				}
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				// [MQTT-6.0.0-1]: close the connection. 1003: unsupported data.
				c.closeWith(websocket.CloseUnsupportedData, "MQTT needs binary messages")
				return 0, errTextMessage
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if err == io.EOF {
			c.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

// Write sends p as one binary message.
func (c *wsConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close sends a close frame (1000, normal closure) if it can within a
// second, then closes the network connection.
func (c *wsConn) Close() error {
	return c.closeWith(websocket.CloseNormalClosure, "")
}

func (c *wsConn) closeWith(code int, text string) error {
	err := net.ErrClosed
	c.once.Do(func() {
		_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(time.Second))
		err = c.ws.Close()
	})
	return err
}

// CloseGracefully ends the connection so that the client reads everything
// written before (broker.GracefulCloser): a close frame (1000, normal
// closure), then the end of the TLS and TCP write side; then it reads and
// discards what the client still sends, beneath the WebSocket framing,
// until the client closes or deadline passes; then it closes. Reading
// beneath the framing works even after a read timeout, which gorilla makes
// permanent; closing with unread input would make the kernel send RST and
// could cost the client the last packets, its DISCONNECT included.
func (c *wsConn) CloseGracefully(deadline time.Time) error {
	err := net.ErrClosed
	c.once.Do(func() {
		frameBy := time.Now().Add(time.Second)
		if deadline.Before(frameBy) {
			frameBy = deadline
		}
		_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), frameBy)
		if raw := halfCloseStack(c.ws.NetConn()); raw != nil && raw.SetReadDeadline(deadline) == nil {
			var buf [1024]byte
			for {
				if _, err := raw.Read(buf[:]); err != nil {
					break
				}
			}
		}
		err = c.ws.Close()
	})
	return err
}

// halfCloseStack ends the write side of nc and of every connection beneath
// it (close_notify for TLS, FIN for TCP) and returns the TCP socket at the
// bottom, or nil if there is none it can reach.
func halfCloseStack(nc net.Conn) *net.TCPConn {
	for range 8 {
		switch x := nc.(type) {
		case *net.TCPConn:
			x.CloseWrite()
			return x
		case *tls.Conn:
			x.CloseWrite()
			nc = x.NetConn()
		case interface{ NetConn() net.Conn }: // this package's wrappers
			nc = x.NetConn()
		default:
			return nil
		}
	}
	return nil
}

// UnderlyingConn returns the conn the WebSocket runs on, so that the broker
// can see whether the client closed it while its CONNECT waited
// (broker.UnderlyingConner). Reading it would bypass the framing: the
// broker only polls the socket.
func (c *wsConn) UnderlyingConn() net.Conn { return c.ws.NetConn() }

func (c *wsConn) LocalAddr() net.Addr  { return c.ws.LocalAddr() }
func (c *wsConn) RemoteAddr() net.Addr { return c.remote }

func (c *wsConn) SetDeadline(t time.Time) error {
	return errors.Join(c.ws.SetReadDeadline(t), c.ws.SetWriteDeadline(t))
}
func (c *wsConn) SetReadDeadline(t time.Time) error  { return c.ws.SetReadDeadline(t) }
func (c *wsConn) SetWriteDeadline(t time.Time) error { return c.ws.SetWriteDeadline(t) }

// CertIdentity returns the name from the client's verified certificate
// when the listener was configured to take one.
func (c *wsConn) CertIdentity() (string, bool) { return c.name, c.named }
