package load

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"sync/atomic"

	"github.com/gorilla/websocket"
	"github.com/roost-mqtt/roost/internal/wsconn"
)

// wsBufferSize is gorilla's frame buffer for WebSocket conns: as large as a
// publisher's batch, so one batch is one frame and one system call.
const wsBufferSize = batchBytes + 1024

// idleBuf is the read buffer of connections that carry next to nothing
// (Connections, Storm). Their WebSocket buffers are as small: gorilla
// allocates both at dial, and 20,000 conns with 2 x 65 KiB each would be
// 2.6 GB of load generator.
const idleBuf = 256

// dialer opens transport connections to one broker URL. It is safe for
// concurrent use.
type dialer struct {
	scheme string
	host   string // host:port
	u      *url.URL
	tls    *tls.Config
	// sources are the local addresses connections are spread over; empty
	// means let the kernel choose.
	sources []net.IP
	next    atomic.Uint32
}

func newDialer(raw string, tlsConf *tls.Config) (*dialer, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: url %q: %v", ErrConfig, raw, err)
	}
	port := ""
	switch u.Scheme {
	case "mqtt", "tcp":
		port = "1883"
	case "mqtts", "ssl", "tls":
		port = "8883"
	case "ws":
		port = "80"
	case "wss":
		port = "443"
	default:
		return nil, fmt.Errorf("%w: url %q: scheme must be mqtt, mqtts, ws or wss", ErrConfig, raw)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("%w: url %q: no host", ErrConfig, raw)
	}
	if u.Port() == "" {
		u.Host = net.JoinHostPort(u.Hostname(), port)
	}
	if (u.Scheme == "ws" || u.Scheme == "wss") && u.Path == "" {
		u.Path = "/mqtt"
	}
	d := &dialer{scheme: u.Scheme, host: u.Host, u: u}
	if u.Scheme == "mqtts" || u.Scheme == "ssl" || u.Scheme == "tls" || u.Scheme == "wss" {
		d.tls = &tls.Config{}
		if tlsConf != nil {
			d.tls = tlsConf.Clone()
		}
		if d.tls.ServerName == "" {
			d.tls.ServerName = u.Hostname()
		}
		if d.tls.CurvePreferences == nil {
			// Every broker does the same key exchange: Go would
			// negotiate X25519MLKEM768 with a Go server (Roost) and
			// X25519 with OpenSSL 3.0 (mosquitto), and the hybrid costs
			// both sides several times more, so handshakes per second
			// would compare two different handshakes.
			d.tls.CurvePreferences = []tls.CurveID{tls.X25519}
		}
	}
	d.sources = loopbackSources(u.Hostname())
	return d, nil
}

// loopbackSources returns 127.0.0.1..127.0.0.254 when host is an IPv4
// loopback address (or localhost) and the system routes all of 127/8 to
// loopback (Linux does; macOS has only 127.0.0.1), else nil.
func loopbackSources(host string) []net.IP {
	if !spreadLoopback {
		return nil
	}
	if host != "localhost" {
		ip := net.ParseIP(host)
		if ip == nil || ip.To4() == nil || !ip.IsLoopback() {
			return nil
		}
	}
	src := make([]net.IP, 0, 254)
	for i := 1; i <= 254; i++ {
		src = append(src, net.IPv4(127, 0, 0, byte(i)))
	}
	return src
}

// netDialer returns a net.Dialer for the next connection, with the next
// source address when spreading.
func (d *dialer) netDialer() *net.Dialer {
	nd := &net.Dialer{}
	if len(d.sources) > 0 {
		i := d.next.Add(1) - 1
		nd.LocalAddr = &net.TCPAddr{IP: d.sources[int(i)%len(d.sources)]}
		nd.Control = bindNoPort
	}
	return nd
}

// dial opens one transport connection: TCP, TLS, or a WebSocket carrying
// MQTT in binary messages; idle ones get small WebSocket buffers.
func (d *dialer) dial(ctx context.Context, idle bool) (net.Conn, error) {
	nd := d.netDialer()
	host := d.host
	if len(d.sources) > 0 && d.u.Hostname() == "localhost" {
		// Resolve to the IPv4 loopback the source addresses belong to.
		host = net.JoinHostPort("127.0.0.1", d.u.Port())
	}
	switch d.scheme {
	case "mqtt", "tcp":
		return nd.DialContext(ctx, "tcp", host)
	case "mqtts", "ssl", "tls":
		td := tls.Dialer{NetDialer: nd, Config: d.tls}
		return td.DialContext(ctx, "tcp", host)
	}
	wd := websocket.Dialer{
		NetDialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return nd.DialContext(ctx, network, host)
		},
		Subprotocols:    []string{"mqtt"},
		TLSClientConfig: d.tls,
		ReadBufferSize:  wsBufferSize,
		WriteBufferSize: wsBufferSize,
	}
	if idle {
		wd.ReadBufferSize, wd.WriteBufferSize = idleBuf, idleBuf
	}
	ws, resp, err := wd.DialContext(ctx, d.u.String(), nil)
	if err != nil {
		if resp != nil {
			err = fmt.Errorf("%w (HTTP %s)", err, resp.Status)
		}
		return nil, fmt.Errorf("websocket %s: %w", d.u.Redacted(), err)
	}
	return wsconn.New(ws), nil
}
