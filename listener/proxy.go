package listener

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// ErrProxyHeader is wrapped by every error about a malformed or missing
// PROXY protocol header.
var ErrProxyHeader = errors.New("bad PROXY protocol header")

// v2Signature starts every PROXY protocol v2 header.
var v2Signature = []byte("\r\n\r\n\x00\r\nQUIT\n")

// v1MaxLen is the longest v1 header, CRLF included (spec section 2.1).
const v1MaxLen = 107

// readProxyHeader reads a PROXY protocol v1 or v2 header from br and
// returns the client address it names. ok is false when the header is
// valid but carries no address to use (v1 UNKNOWN, v2 LOCAL, or a family
// other than TCP over IPv4/IPv6); the conn's own address then stands.
func readProxyHeader(br *bufio.Reader) (addr net.Addr, ok bool, err error) {
	first, err := br.Peek(1)
	if err != nil {
		return nil, false, fmt.Errorf("%w: %w", ErrProxyHeader, err)
	}
	switch first[0] {
	case 'P':
		return readProxyV1(br)
	case '\r':
		return readProxyV2(br)
	}
	return nil, false, fmt.Errorf("%w: none sent (first byte 0x%02x)", ErrProxyHeader, first[0])
}

// readProxyV1 parses "PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222\r\n".
func readProxyV1(br *bufio.Reader) (net.Addr, bool, error) {
	var line []byte
	for len(line) < v1MaxLen {
		b, err := br.ReadByte()
		if err != nil {
			return nil, false, fmt.Errorf("%w: v1: %w", ErrProxyHeader, err)
		}
		line = append(line, b)
		if b == '\n' {
			break
		}
	}
	text, found := bytes.CutSuffix(line, []byte("\r\n"))
	if !found {
		return nil, false, fmt.Errorf("%w: v1: no CRLF within %d bytes", ErrProxyHeader, v1MaxLen)
	}
	f := strings.Split(string(text), " ")
	if f[0] != "PROXY" || len(f) < 2 {
		return nil, false, fmt.Errorf("%w: v1: %q", ErrProxyHeader, text)
	}
	switch f[1] {
	case "UNKNOWN": // the proxy could not tell; the rest of the line is ignored
		return nil, false, nil
	case "TCP4", "TCP6":
	default:
		return nil, false, fmt.Errorf("%w: v1: protocol %q", ErrProxyHeader, f[1])
	}
	if len(f) != 6 {
		return nil, false, fmt.Errorf("%w: v1: want 6 fields, got %q", ErrProxyHeader, text)
	}
	src, err1 := netip.ParseAddr(f[2])
	_, err2 := netip.ParseAddr(f[3])
	port, err3 := parsePort(f[4])
	_, err4 := parsePort(f[5])
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return nil, false, fmt.Errorf("%w: v1: %q: %w", ErrProxyHeader, text, err)
	}
	if src.Is4() != (f[1] == "TCP4") || src.Zone() != "" {
		return nil, false, fmt.Errorf("%w: v1: %s address %s", ErrProxyHeader, f[1], src)
	}
	return net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, port)), true, nil
}

// parsePort accepts a decimal port without sign or leading zeros.
func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || (len(s) > 1 && s[0] == '0') {
		return 0, fmt.Errorf("bad port %q", s)
	}
	return uint16(n), nil
}

// readProxyV2 parses the binary header: 12-byte signature, version and
// command, family and transport, a 16-bit length, then the addresses and
// optional TLVs (which are skipped).
func readProxyV2(br *bufio.Reader) (net.Addr, bool, error) {
	var hdr [16]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return nil, false, fmt.Errorf("%w: v2: %w", ErrProxyHeader, err)
	}
	if !bytes.Equal(hdr[:12], v2Signature) {
		return nil, false, fmt.Errorf("%w: v2: bad signature", ErrProxyHeader)
	}
	if hdr[12]>>4 != 2 {
		return nil, false, fmt.Errorf("%w: v2: version %d", ErrProxyHeader, hdr[12]>>4)
	}
	cmd, fam := hdr[12]&0x0F, hdr[13]
	n := int(binary.BigEndian.Uint16(hdr[14:]))
	body := make([]byte, n)
	if _, err := io.ReadFull(br, body); err != nil {
		return nil, false, fmt.Errorf("%w: v2: %d-byte body: %w", ErrProxyHeader, n, err)
	}
	switch cmd {
	case 0x0: // LOCAL: the proxy's own connection (health check)
		return nil, false, nil
	case 0x1: // PROXY
	default:
		return nil, false, fmt.Errorf("%w: v2: command 0x%x", ErrProxyHeader, cmd)
	}
	var alen int
	switch fam {
	case 0x11: // TCP over IPv4
		alen = 4
	case 0x21: // TCP over IPv6
		alen = 16
	case 0x00, 0x31: // UNSPEC, or a Unix socket: nothing useful as an address
		return nil, false, nil
	default:
		return nil, false, fmt.Errorf("%w: v2: family/transport 0x%02x is not TCP", ErrProxyHeader, fam)
	}
	if n < 2*alen+4 {
		return nil, false, fmt.Errorf("%w: v2: %d-byte body too short for its addresses", ErrProxyHeader, n)
	}
	src, _ := netip.AddrFromSlice(body[:alen])
	port := binary.BigEndian.Uint16(body[2*alen:])
	return net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, port)), true, nil
}

// proxyConn is a conn whose first bytes were a PROXY header.
type proxyConn struct {
	net.Conn
	r      io.Reader // the bytes read ahead, then the conn
	remote net.Addr
}

func (c *proxyConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// NetConn returns the wrapped connection.
func (c *proxyConn) NetConn() net.Conn { return c.Conn }

// ReadTimeoutSafe marks proxyConn as transparent (broker.TransparentConn):
// r returns its read-ahead bytes before it reads the socket again, so a
// Read that timed out left nothing behind.
func (c *proxyConn) ReadTimeoutSafe() {}

func (c *proxyConn) RemoteAddr() net.Addr { return c.remote }

// ProxyOptions configure Proxy.
type ProxyOptions struct {
	// HeaderTimeout bounds the wait for the header. Default 10s.
	HeaderTimeout time.Duration
	// Logf reports refused conns; nil discards.
	Logf func(msg string, args ...any)
}

// Proxy returns a listener whose conns start with a PROXY protocol v1 or v2
// header, which it reads (within HeaderTimeout, in a goroutine per conn, so
// a slow sender blocks only itself) and strips. The conns it returns report
// the client address from the header as RemoteAddr. A conn whose header is
// missing or malformed is closed and reported to Logf, never returned.
//
// Only put this behind a proxy you run: whoever can connect can claim any
// address.
func Proxy(inner net.Listener, o ProxyOptions) net.Listener {
	if o.HeaderTimeout <= 0 {
		o.HeaderTimeout = 10 * time.Second
	}
	return newAsyncListener(inner, func(c net.Conn) (net.Conn, error) {
		return proxyHandshake(c, o.HeaderTimeout)
	}, o.Logf)
}

func proxyHandshake(c net.Conn, timeout time.Duration) (net.Conn, error) {
	c.SetReadDeadline(time.Now().Add(timeout))
	// A small buffer: it holds the header and perhaps the start of CONNECT.
	br := bufio.NewReaderSize(c, 256)
	addr, ok, err := readProxyHeader(br)
	if err != nil {
		return nil, err
	}
	c.SetReadDeadline(time.Time{})
	pc := &proxyConn{Conn: c, r: c, remote: c.RemoteAddr()}
	if ok {
		pc.remote = addr
	}
	if n := br.Buffered(); n > 0 {
		ahead, _ := br.Peek(n)
		pc.r = io.MultiReader(bytes.NewReader(bytes.Clone(ahead)), c)
	}
	return pc, nil
}
