package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"time"
)

// socks5Dialer opens TCP connections through a SOCKS5 proxy (RFC 1928)
// with no authentication or a user name and password (RFC 1929), the two
// methods mosquitto_pub --proxy offers. It is small enough not to be
// worth golang.org/x/net/proxy as a direct dependency.
type socks5Dialer struct {
	proxy      string // host:port
	user, pass string
	auth       bool
	// remoteDNS sends host names to the proxy to resolve (socks5h://,
	// mosquitto's only scheme); socks5:// resolves them here.
	remoteDNS bool
}

// newSOCKS5Dialer parses socks5h://[user[:password]@]host[:port] (port
// 1080 by default) or the same with socks5://.
func newSOCKS5Dialer(raw string) (*socks5Dialer, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "socks5h" && u.Scheme != "socks5") || u.Hostname() == "" {
		return nil, fmt.Errorf("Unsupported proxy protocol: %s (want socks5h://[user[:password]@]host[:port])", raw)
	}
	d := &socks5Dialer{proxy: u.Host, remoteDNS: u.Scheme == "socks5h"}
	if u.Port() == "" {
		d.proxy = net.JoinHostPort(u.Hostname(), "1080")
	}
	if u.User != nil {
		d.auth = true
		d.user = u.User.Username()
		d.pass, _ = u.User.Password()
		if len(d.user) > 255 || len(d.pass) > 255 {
			return nil, errors.New("--proxy: user name and password must be at most 255 bytes each")
		}
	}
	return d, nil
}

// DialContext connects to addr (host:port) through the proxy. ctx bounds
// the whole exchange.
func (d *socks5Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, "tcp", d.proxy)
	if err != nil {
		return nil, fmt.Errorf("proxy %s: %w", d.proxy, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	err = d.handshake(ctx, c, addr)
	if err == nil && !stop() {
		err = ctx.Err()
	}
	if err != nil {
		c.Close()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("proxy %s: %w", d.proxy, err)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

func (d *socks5Dialer) handshake(ctx context.Context, c net.Conn, addr string) error {
	method := byte(0x00) // no authentication
	if d.auth {
		method = 0x02 // user name and password
	}
	if _, err := c.Write([]byte{5, 1, method}); err != nil {
		return err
	}
	var rep [2]byte
	if _, err := io.ReadFull(c, rep[:]); err != nil {
		return err
	}
	if rep[0] != 5 || rep[1] != method {
		return errors.New("the proxy accepts none of our authentication methods")
	}
	if d.auth {
		msg := append([]byte{1, byte(len(d.user))}, d.user...)
		msg = append(append(msg, byte(len(d.pass))), d.pass...)
		if _, err := c.Write(msg); err != nil {
			return err
		}
		if _, err := io.ReadFull(c, rep[:]); err != nil {
			return err
		}
		if rep[1] != 0 {
			return errors.New("the proxy refused the user name or password")
		}
	}
	req, err := d.connectRequest(ctx, addr)
	if err != nil {
		return err
	}
	if _, err := c.Write(req); err != nil {
		return err
	}
	return readConnectReply(c)
}

// connectRequest is CONNECT to addr: by name for the proxy to resolve, or
// by address.
func (d *socks5Dialer) connectRequest(ctx context.Context, addr string) ([]byte, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("port %q: %w", portStr, err)
	}
	ip := net.ParseIP(host)
	if ip == nil && !d.remoteDNS {
		ips, err := net.DefaultResolver.LookupIP(ctx, "ip", host)
		if err != nil {
			return nil, err
		}
		ip = ips[0]
	}
	req := []byte{5, 1, 0}
	switch {
	case ip == nil:
		if len(host) > 255 {
			return nil, fmt.Errorf("host name %q too long for SOCKS5", host)
		}
		req = append(append(req, 3, byte(len(host))), host...)
	case ip.To4() != nil:
		req = append(append(req, 1), ip.To4()...)
	default:
		req = append(append(req, 4), ip.To16()...)
	}
	return binary.BigEndian.AppendUint16(req, uint16(port)), nil
}

// socks5Reply names an RFC 1928 reply code.
func socks5Reply(code byte) string {
	switch code {
	case 1:
		return "general SOCKS server failure"
	case 2:
		return "connection not allowed by ruleset"
	case 3:
		return "network unreachable"
	case 4:
		return "host unreachable"
	case 5:
		return "connection refused"
	case 6:
		return "TTL expired"
	case 7:
		return "command not supported"
	case 8:
		return "address type not supported"
	}
	return fmt.Sprintf("SOCKS5 reply %d", code)
}

func readConnectReply(c net.Conn) error {
	var h [4]byte // VER REP RSV ATYP
	if _, err := io.ReadFull(c, h[:]); err != nil {
		return err
	}
	if h[0] != 5 {
		return errors.New("not a SOCKS5 proxy")
	}
	if h[1] != 0 {
		return errors.New(socks5Reply(h[1]))
	}
	n := 0 // bound address, then 2 bytes of port
	switch h[3] {
	case 1:
		n = 4
	case 4:
		n = 16
	case 3:
		var l [1]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return err
		}
		n = int(l[0])
	default:
		return fmt.Errorf("SOCKS5 address type %d", h[3])
	}
	_, err := io.ReadFull(c, make([]byte, n+2))
	return err
}
