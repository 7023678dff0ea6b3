package client

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"

	"github.com/gorilla/websocket"
	"github.com/roost-mqtt/roost/internal/wsconn"
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
	return wsconn.New(ws), nil
}
