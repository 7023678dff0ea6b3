package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/gorilla/websocket"
	"github.com/roost-mqtt/roost/internal/wsconn"
)

// proxyV2 is a PROXY protocol v2 header: command (0 LOCAL, 1 PROXY),
// family/transport byte and address block.
func proxyV2(cmd, fam byte, body []byte) []byte {
	h := append([]byte("\r\n\r\n\x00\r\nQUIT\n"), 0x20|cmd, fam)
	h = binary.BigEndian.AppendUint16(h, uint16(len(body)))
	return append(h, body...)
}

// Headers that carry no client address: the proxy's own connection (v2
// LOCAL, a health check; the spec has it ignore any address block), a
// v1 proxy that could not tell (UNKNOWN), and v2 PROXY for a client on a
// Unix socket or of an unspecified family. The broker must take the
// connection's own address, the proxy's, for them.
var addresslessHeaders = []struct {
	name   string
	header []byte
}{
	{"v2 LOCAL", proxyV2(0, 0x00, nil)},
	{"v2 LOCAL with an address block", proxyV2(0, 0x11, []byte{203, 0, 113, 9, 127, 0, 0, 1, 0x9c, 0x40, 0x07, 0x5b})},
	{"v1 UNKNOWN", []byte("PROXY UNKNOWN\r\n")},
	{"v1 UNKNOWN with addresses", []byte("PROXY UNKNOWN 203.0.113.9 127.0.0.1 40000 1883\r\n")},
	{"v2 PROXY over a Unix socket", proxyV2(1, 0x31, make([]byte, 216))},
	{"v2 PROXY of an unspecified family", proxyV2(1, 0x00, nil)},
}

// A connection whose PROXY header carries no client address is served
// with the proxy's own address, on every transport the header can come
// before (TCP, TLS, WebSocket): real clients (paho.golang) connect, the
// broker logs the proxy's address as the client's, and judges anonymous
// access by it (the default: anonymous only from this machine) — a
// client behind a proxy on this machine is accepted, one whose proxy is
// on another address is refused with 0x87, not let in as if local. A
// proxy's health check (LOCAL, then close) costs nothing and logs no
// error.
func TestServeProxyHeaderWithoutAddress(t *testing.T) {
	t.Parallel()
	f := newTLSFiles(t)
	pem, err := os.ReadFile(f.ca)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	cfg := writeConfig(t, "listeners:\n"+
		"  - {url: mqtt://0.0.0.0:0, name: tcp, proxy_protocol: true}\n"+
		"  - {url: mqtts://0.0.0.0:0, name: tls, proxy_protocol: true, tls: {cert: "+f.cert+", key: "+f.key+"}}\n"+
		"  - {url: ws://0.0.0.0:0, name: ws, proxy_protocol: true}\n")
	b := startServe(t, "--config", cfg, "--memory")
	ports := map[string]string{}
	if !eventually(t, 10*time.Second, func() bool {
		for _, l := range strings.Split(b.log.String(), "\n") {
			if strings.Contains(l, `msg="listener ready"`) {
				for _, s := range []string{"mqtt", "mqtts", "ws"} {
					if strings.Contains(l, " scheme="+s) && !strings.Contains(l, " scheme="+s+"s") {
						addr := strings.Fields(l[strings.Index(l, "addr="):])[0]
						_, ports[s], _ = net.SplitHostPort(strings.TrimPrefix(addr, "addr="))
					}
				}
			}
		}
		return len(ports) == 3
	}) {
		t.Fatalf("listeners not ready: %v; log:\n%s", ports, b.log.String())
	}
	// wrap turns the TCP conn, header sent, into the listener's transport.
	wrap := map[string]func(nc net.Conn) (net.Conn, error){
		"mqtt": func(nc net.Conn) (net.Conn, error) { return nc, nil },
		"mqtts": func(nc net.Conn) (net.Conn, error) {
			tc := tls.Client(nc, &tls.Config{RootCAs: roots, ServerName: "localhost"})
			return tc, tc.Handshake()
		},
		"ws": func(nc net.Conn) (net.Conn, error) {
			d := websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: 5 * time.Second,
				NetDialContext: func(context.Context, string, string) (net.Conn, error) { return nc, nil }}
			ws, _, err := d.Dial("ws://"+nc.RemoteAddr().String()+"/mqtt", nil)
			if err != nil {
				return nil, err
			}
			return wsconn.New(ws), nil
		},
	}
	other := nonLoopbackAddr(t)
	for si, scheme := range []string{"mqtt", "mqtts", "ws"} {
		for i, h := range addresslessHeaders {
			froms := []string{"127.0.0.1"}
			if i == si {
				// One refusal per transport: refusals from one address
				// count towards password guessing, and the sixth within
				// a minute would be held back.
				froms = append(froms, other)
			}
			for _, from := range froms {
				id := fmt.Sprintf("%s-%d-%s", scheme, i, strings.ReplaceAll(from, ".", "_"))
				nc, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}).
					Dial("tcp", net.JoinHostPort(from, ports[scheme]))
				if err != nil {
					t.Fatal(err)
				}
				proxyAddr := nc.LocalAddr().String() // the proxy's own address, as the broker sees the conn
				if _, err := nc.Write(h.header); err != nil {
					t.Fatal(err)
				}
				conn, err := wrap[scheme](nc)
				if err != nil {
					t.Fatalf("%s after %s from %s: %v; log:\n%s", scheme, h.name, from, err, b.log.String())
				}
				code := pahoConnectOn(t, conn, id)
				conn.Close()
				want := byte(0)
				if from != "127.0.0.1" {
					want = 0x87 // anonymous clients are accepted from this machine only
				}
				if code != want {
					t.Errorf("%s, %s, proxy at %s: CONNACK 0x%02X, want 0x%02X", scheme, h.name, from, code, want)
					continue
				}
				wantLog := "client connected"
				if want != 0 {
					wantLog = "anonymous clients are accepted from the broker's own machine only"
				}
				if !eventually(t, 5*time.Second, func() bool {
					for _, l := range strings.Split(b.log.String(), "\n") {
						if strings.Contains(l, wantLog) && strings.Contains(l, "remote="+proxyAddr) {
							return true
						}
					}
					return false
				}) {
					t.Errorf("%s, %s: no %q line with remote=%s; log:\n%s", scheme, h.name, wantLog, proxyAddr, b.log.String())
				}
			}
		}
		// A health check: LOCAL, then the proxy hangs up.
		nc, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", ports[scheme]))
		if err != nil {
			t.Fatal(err)
		}
		nc.Write(proxyV2(0, 0x00, nil))
		nc.Close()
	}
	// The server still serves after the health checks, and nothing was
	// logged as an error.
	nc, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", ports["mqtt"]))
	if err != nil {
		t.Fatal(err)
	}
	nc.Write(proxyV2(0, 0x00, nil))
	if code := pahoConnectOn(t, nc, "after-health-checks"); code != 0 {
		t.Errorf("after the health checks: CONNACK 0x%02X", code)
	}
	nc.Close()
	if log := b.log.String(); strings.Contains(log, "level=ERROR") || strings.Contains(log, "panic") {
		t.Errorf("errors logged:\n%s", log)
	}
}

// pahoConnectOn connects an anonymous paho.golang (MQTT 5) client over
// conn and returns the CONNACK's reason code.
func pahoConnectOn(t *testing.T, conn net.Conn, id string) byte {
	t.Helper()
	// A locked conn: paho writes a packet in pieces over TLS and
	// WebSocket, and its first PINGREQ comes right after the CONNACK.
	c := paho.NewClient(paho.ClientConfig{ClientID: id, Conn: packets.NewThreadSafeConn(conn)})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true})
	if ca == nil {
		t.Fatalf("%s: no CONNACK: %v", id, err)
	}
	if err == nil {
		c.Disconnect(&paho.Disconnect{})
	}
	return ca.ReasonCode
}
