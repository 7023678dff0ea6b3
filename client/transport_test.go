package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/devcert"
	"github.com/roost-mqtt/roost/internal/mosquittotest"
	"github.com/roost-mqtt/roost/listener"
	"github.com/roost-mqtt/roost/packet"
	"github.com/roost-mqtt/roost/store"
)

// testPKI is a development CA, a server certificate for 127.0.0.1 and
// localhost, and a client certificate, as PEM files.
type testPKI struct {
	ca                 *devcert.CA
	caFile             string
	certFile, keyFile  string // server
	clientCert, client string // client certificate and key files
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	ca, err := devcert.NewCA("client test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{ca: ca, caFile: filepath.Join(dir, "ca.pem"),
		certFile: filepath.Join(dir, "server.pem"), keyFile: filepath.Join(dir, "server-key.pem"),
		clientCert: filepath.Join(dir, "client.pem"), client: filepath.Join(dir, "client-key.pem")}
	write := func(name string, b []byte) {
		if err := os.WriteFile(name, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(p.caFile, ca.CertPEM())
	chain, key, err := ca.Issue(devcert.Leaf{CommonName: "localhost", Hosts: []string{"localhost", "127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	write(p.certFile, chain)
	write(p.keyFile, key)
	chain, key, err = ca.Issue(devcert.Leaf{CommonName: "car1", Client: true})
	if err != nil {
		t.Fatal(err)
	}
	write(p.clientCert, chain)
	write(p.client, key)
	return p
}

// tlsConfig trusts the test CA only, and presents the client certificate
// when withCert.
func (p *testPKI) tlsConfig(t *testing.T, withCert bool) *tls.Config {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(p.ca.Cert)
	tc := &tls.Config{RootCAs: pool}
	if withCert {
		cert, err := tls.LoadX509KeyPair(p.clientCert, p.client)
		if err != nil {
			t.Fatal(err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc
}

// transportURLs are the server URLs of one broker by transport.
type transportURLs map[string]string

// roostTransports serves one in-process Roost on mqtt://, mqtts://, ws://
// and wss://, through Roost's own listener package, and on a second
// mqtts:// that requires a client certificate ("mqtts+cert").
func roostTransports(t *testing.T, p *testPKI) transportURLs {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	srv, err := broker.New(broker.Options{Logger: log, SysInterval: -1, Store: store.NewMemory()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	tcp := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	certs := func(o listener.TLSOptions) *listener.CertManager {
		o.Certs = []listener.KeyPair{{Cert: p.certFile, Key: p.keyFile}}
		m, err := listener.NewCertManager(o)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	serve := func(ln net.Listener) string {
		go srv.Serve(ln)
		return ln.Addr().String()
	}
	tm := certs(listener.TLSOptions{})
	return transportURLs{
		"mqtt":       "mqtt://" + serve(tcp()),
		"mqtts":      "mqtts://" + serve(listener.TLS(tcp(), tm)),
		"ws":         "ws://" + serve(listener.WebSocket(tcp(), listener.WSOptions{Logger: log})) + "/mqtt",
		"wss":        "wss://" + serve(listener.WebSocket(tcp(), listener.WSOptions{Logger: log, TLS: tm})) + "/mqtt",
		"mqtts+cert": "mqtts://" + serve(listener.TLS(tcp(), certs(listener.TLSOptions{ClientCA: p.caFile, RequireClientCert: true}))),
	}
}

// mosquittoTransports starts one mosquitto with the same five listeners.
func mosquittoTransports(t *testing.T, p *testPKI) transportURLs {
	t.Helper()
	tlsLines := func(extra ...string) []string {
		return append([]string{"cafile " + p.caFile, "certfile " + p.certFile, "keyfile " + p.keyFile}, extra...)
	}
	var lines []string
	lines = append(lines, "listener {port} 127.0.0.1")
	lines = append(lines, tlsLines()...)
	lines = append(lines, "listener {port} 127.0.0.1", "protocol websockets")
	lines = append(lines, "listener {port} 127.0.0.1", "protocol websockets")
	lines = append(lines, tlsLines()...)
	lines = append(lines, "listener {port} 127.0.0.1")
	lines = append(lines, tlsLines("require_certificate true")...)
	b := mosquittotest.Start(t, lines...)
	at := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", b.Ports[i]) }
	return transportURLs{
		"mqtt":       "mqtt://" + b.Addr,
		"mqtts":      "mqtts://" + at(0),
		"ws":         "ws://" + at(1) + "/mqtt",
		"wss":        "wss://" + at(2) + "/mqtt",
		"mqtts+cert": "mqtts://" + at(3),
	}
}

// Every transport works end to end against Roost's own listeners and
// against mosquitto's, for MQTT 5 and 3.1.1: a subscriber on one
// transport gets what a publisher on another sends, including a payload
// larger than a WebSocket frame or a TLS record. The server certificate
// is verified against the test CA (by IP address, taken from the URL).
func TestTransports(t *testing.T) {
	t.Parallel()
	p := newTestPKI(t)
	for _, name := range []string{"roost", "mosquitto"} {
		t.Run(name, func(t *testing.T) {
			var urls transportURLs
			if name == "roost" {
				urls = roostTransports(t, p)
			} else {
				urls = mosquittoTransports(t, p)
			}
			for _, scheme := range []string{"mqtts", "ws", "wss", "mqtts+cert"} {
				for _, v := range []packet.Version{packet.V5, packet.V311} {
					t.Run(fmt.Sprintf("%s/%v", scheme, v), func(t *testing.T) {
						testTransport(t, urls, scheme, v, p.tlsConfig(t, scheme == "mqtts+cert"), bigSize[name])
					})
				}
			}
		})
	}
}

// bigSize is the large payload per broker: many WebSocket frames, TLS
// records and reads. mosquitto 2.0.11 sends WebSocket data at about
// 40 kB/s (libwebsockets writes a few kB per service loop), so it gets a
// smaller one that still spans frames and records.
var bigSize = map[string]int{"roost": 300_000, "mosquitto": 20_000}

func testTransport(t *testing.T, urls transportURLs, scheme string, v packet.Version, tc *tls.Config, size int) {
	ctx := testCtx(t, 20*time.Second)
	var in inbox
	c := newClient(t, urls[scheme], v, func(o *Options) { o.TLSConfig = tc })
	tp := "tr/" + strings.ReplaceAll(scheme, "+", "-")
	if _, err := c.Subscribe(ctx, Subscription{Filter: tp + "/#", QoS: 2, Handler: in.handle}); err != nil {
		t.Fatal(err)
	}
	// The publisher on plain TCP proves the transports meet in one broker.
	pub := newClient(t, urls["mqtt"], v, nil)
	big := strings.Repeat("0123456789", size/10)
	payloads := []string{"a", big, ""}
	for i, pl := range payloads {
		if _, err := pub.Publish(ctx, Message{Topic: fmt.Sprintf("%s/%d", tp, i), QoS: packet.QoS(i), Payload: []byte(pl)}); err != nil {
			t.Fatal(err)
		}
	}
	// And the subscriber's own transport carries publishes, both ways.
	if _, err := c.Publish(ctx, Message{Topic: tp + "/self", QoS: 1, Payload: []byte(big)}); err != nil {
		t.Fatal(err)
	}
	got := in.waitN(t, 4, 10*time.Second)
	for i, m := range got {
		want := big
		if i < len(payloads) {
			want = payloads[i]
		}
		if string(m.Payload) != want {
			t.Errorf("message %d on %s: %d bytes, want %d", i, m.Topic, len(m.Payload), len(want))
		}
	}
}

// A server certificate from an unknown CA, or a listener that requires a
// client certificate when none is given, fails Connect with the TLS error
// rather than retrying forever.
func TestTransportTLSRefused(t *testing.T) {
	t.Parallel()
	p := newTestPKI(t)
	other := newTestPKI(t) // trusts another CA
	urls := roostTransports(t, p)
	ctx := testCtx(t, 20*time.Second)
	cases := []struct {
		url  string
		tc   *tls.Config
		want string
	}{
		{urls["mqtts"], other.tlsConfig(t, false), "certificate signed by unknown authority"},
		{urls["wss"], other.tlsConfig(t, false), "certificate signed by unknown authority"},
		{urls["mqtts"], nil, "certificate signed by unknown authority"}, // system roots
		{urls["mqtts+cert"], p.tlsConfig(t, false), "certificate"},
	}
	for _, tt := range cases {
		c, err := New(Options{Servers: []string{tt.url}, TLSConfig: tt.tc, ConnectTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		err = c.Connect(ctx)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Connect = %v, want an error about %q", tt.url, err, tt.want)
		}
		var re *ReasonError
		if errors.As(err, &re) {
			t.Errorf("%s: a TLS failure reported as a reason code: %v", tt.url, err)
		}
	}
}
