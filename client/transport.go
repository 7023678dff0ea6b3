package client

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// parseServer checks a server URL and fills in the default port.
func parseServer(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("client: server %q: %w", s, err)
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
		return nil, fmt.Errorf("client: server %q: scheme must be mqtt, mqtts, ws or wss", s)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("client: server %q: no host", s)
	}
	if u.Port() == "" {
		u.Host = net.JoinHostPort(u.Hostname(), port)
	}
	return u, nil
}

// dialFunc opens a TCP connection, as net.Dialer.DialContext does.
type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// dial opens the transport for server: TCP, TLS, or a WebSocket carrying
// MQTT in binary messages (subprotocol "mqtt", path "/mqtt" by default),
// over a TCP connection from dialTCP (nil: a net.Dialer).
func dial(ctx context.Context, server string, cfg *tls.Config, dialTCP dialFunc) (net.Conn, error) {
	u, err := parseServer(server)
	if err != nil {
		return nil, err
	}
	tlsConf := func() *tls.Config {
		c := &tls.Config{}
		if cfg != nil {
			c = cfg.Clone()
		}
		if c.ServerName == "" {
			c.ServerName = u.Hostname()
		}
		return c
	}
	proxyEnv := http.ProxyFromEnvironment
	if dialTCP == nil {
		var d net.Dialer
		dialTCP = d.DialContext
	} else {
		proxyEnv = nil // the caller's dialer decides the route
	}
	switch u.Scheme {
	case "mqtt", "tcp":
		return dialTCP(ctx, "tcp", u.Host)
	case "mqtts", "ssl", "tls":
		nc, err := dialTCP(ctx, "tcp", u.Host)
		if err != nil {
			return nil, err
		}
		tc := tls.Client(nc, tlsConf())
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, err
		}
		return tc, nil
	}
	wd := websocket.Dialer{
		NetDialContext:   dialTCP,
		Subprotocols:     []string{"mqtt"},
		HandshakeTimeout: 0, // ctx bounds it
		Proxy:            proxyEnv,
	}
	if u.Scheme == "wss" {
		wd.TLSClientConfig = tlsConf()
	}
	if u.Path == "" {
		u.Path = "/mqtt"
	}
	ws, resp, err := wd.DialContext(ctx, u.String(), nil)
	if err != nil {
		if resp != nil {
			err = fmt.Errorf("%w (HTTP %s)", err, resp.Status)
		}
		return nil, fmt.Errorf("client: websocket %s: %w", u.Redacted(), err)
	}
	return &wsConn{ws: ws}, nil
}

// wsConn is a net.Conn over a WebSocket: each Write is one binary message,
// Read returns the bytes of consecutive messages as one stream (MQTT
// packets may span messages [MQTT-6.0.0-2]).
type wsConn struct {
	ws  *websocket.Conn
	rmu sync.Mutex
	r   io.Reader
	wmu sync.Mutex
}

func (c *wsConn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		if c.r == nil {
			typ, r, err := c.ws.NextReader()
			if err != nil {
				if websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway) {
					return 0, io.EOF
				}
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				return 0, fmt.Errorf("client: websocket: non-binary message [MQTT-6.0.0-1]")
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if err == io.EOF {
			c.r = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (c *wsConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsConn) Close() error                       { return c.ws.Close() }
func (c *wsConn) LocalAddr() net.Addr                { return c.ws.LocalAddr() }
func (c *wsConn) RemoteAddr() net.Addr               { return c.ws.RemoteAddr() }
func (c *wsConn) SetReadDeadline(t time.Time) error  { return c.ws.SetReadDeadline(t) }
func (c *wsConn) SetWriteDeadline(t time.Time) error { return c.ws.SetWriteDeadline(t) }
func (c *wsConn) SetDeadline(t time.Time) error {
	c.ws.SetReadDeadline(t)
	return c.ws.SetWriteDeadline(t)
}
