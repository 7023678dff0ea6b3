package listeners

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/devcert"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/listener"
	"github.com/roost-mqtt/roost/packet"
)

// PROXY protocol v1 and v2 headers give the broker the client's address;
// malformed or missing headers close the connection before MQTT starts.
func TestProxyProtocol(t *testing.T) {
	s := newServer(t)
	addr := s.serve(listener.Proxy(s.tcp(), listener.ProxyOptions{HeaderTimeout: time.Second, Logf: s.log.Warn}))
	v2 := append([]byte("\r\n\r\n\x00\r\nQUIT\n"), 0x21, 0x11, 0, 12, 198, 51, 100, 22, 127, 0, 0, 1, 0xAB, 0xCD, 0x07, 0x5B)
	for _, tc := range []struct {
		name   string
		header []byte
		remote string // "" = refused
	}{
		{"v1", []byte("PROXY TCP4 203.0.113.9 127.0.0.1 40000 1883\r\n"), "remote=203.0.113.9:40000"},
		{"v1 ipv6", []byte("PROXY TCP6 2001:db8::9 ::1 40001 1883\r\n"), "remote=[2001:db8::9]:40001"},
		{"v1 unknown", []byte("PROXY UNKNOWN\r\n"), "remote=127.0.0.1:"},
		{"v2", v2, "remote=198.51.100.22:43981"},
		{"v2 local", append([]byte("\r\n\r\n\x00\r\nQUIT\n"), 0x20, 0x00, 0, 0), "remote=127.0.0.1:"},
		{"v1 garbage", []byte("PROXY TCP4 nonsense\r\n"), ""},
		{"v2 bad version", append(bytes.Clone(v2[:12]), 0x31, 0x11, 0, 0), ""},
		{"missing", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			c := mqttClient(t, nc, packet.V311)
			id := "proxy-" + strings.ReplaceAll(tc.name, " ", "-")
			// Header and CONNECT in one write: the bytes after the header
			// must reach the broker intact.
			conn := encode(t, packet.V311, connect(id))
			nc.Write(append(bytes.Clone(tc.header), conn...))
			if tc.remote == "" {
				if got := c.ExpectClosed(3 * time.Second); len(got) > 0 {
					t.Fatalf("got %v from a conn with a bad header", got)
				}
				s.waitLog(t, "connection refused", "bad PROXY protocol header")
				return
			}
			if p := c.Next(3 * time.Second); p.Type() != packet.CONNACK {
				t.Fatalf("got %s", p.Type())
			}
			s.waitLog(t, "client connected", tc.remote, "client_id="+id)
		})
	}
}

// A client that connects and sends no header does not hold up others,
// and is cut off after the header timeout.
func TestProxyStalled(t *testing.T) {
	s := newServer(t)
	addr := s.serve(listener.Proxy(s.tcp(), listener.ProxyOptions{HeaderTimeout: 500 * time.Millisecond}))
	stalled, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := mqttClient(t, nc, packet.V311)
	nc.Write([]byte("PROXY UNKNOWN\r\n"))
	c.Connect(connect("not-stalled"))
	stalled.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := stalled.Read(make([]byte, 1)); timeoutErr(err) == err {
		t.Fatal("stalled conn still open")
	}
}

// Limit refuses conns beyond its maximum and counts closed ones out.
func TestLimit(t *testing.T) {
	s := newServer(t)
	addr := s.serve(listener.Limit(s.tcp(), 1, s.log.Warn))
	first := mqtttest.Dial(t, addr, packet.V311)
	first.Connect(connect("first"))
	second := mqtttest.Dial(t, addr, packet.V311)
	second.Send(connect("second"))
	second.ExpectClosed(3 * time.Second)
	s.waitLog(t, "max_connections", "max_connections=1")
	first.NC.Close()
	mqtttest.Eventually(t, 3*time.Second, func() bool {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return false
		}
		defer c.Close()
		c.Write(encode(t, packet.V311, connect("third")))
		c.SetReadDeadline(time.Now().Add(time.Second))
		n, _ := c.Read(make([]byte, 4))
		return n > 0
	})
}

// mqtts with client certificates: required, verified against the CA; one
// from another CA or none at all is refused. The identity is read from the
// verified certificate.
func TestTLSClientCert(t *testing.T) {
	p := newPKI(t)
	clientCA := devcertCA(t)
	caFile := p.dir + "/clients.pem"
	writeFile(t, caFile, clientCA.CertPEM())
	other := devcertCA(t)

	s := newServer(t)
	m := p.manager(t, listener.TLSOptions{ClientCA: caFile, RequireClientCert: true, Identity: listener.IdentityCN})
	tl := listener.TLS(s.tcp(), m)
	pl := &peekListener{Listener: tl, seen: make(chan net.Conn, 10)}
	addr := s.serve(pl)
	peek := pl.seen

	good := clientCert(t, clientCA, "device-42")
	bad := clientCert(t, other, "intruder")
	for _, tc := range []struct {
		name  string
		certs []tls.Certificate
		ok    bool
	}{
		{"trusted", []tls.Certificate{good}, true},
		{"other CA", []tls.Certificate{bad}, false},
		{"none", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool(t, p.ca), ServerName: "localhost", Certificates: tc.certs})
			if err == nil {
				c := mqttClient(t, nc, packet.V311)
				c.Send(connect("tls-" + tc.name))
				_, err = c.Read(3 * time.Second)
			}
			if (err == nil) != tc.ok {
				t.Fatalf("got %v, want ok %v", err, tc.ok)
			}
			if tc.ok {
				id, ok := (<-peek).(listener.CertIdentity).CertIdentity()
				if !ok || id != "device-42" {
					t.Errorf("CertIdentity() = %q, %v; want device-42", id, ok)
				}
				// The broker takes the certificate's name as the username.
				s.waitLog(t, "client connected", "client_id=tls-trusted", "username=device-42")
			} else {
				<-peek
			}
		})
	}
}

// Renewed certificate files are picked up (Reload, as on SIGHUP, and by
// polling) while a client that connected with the old one stays connected.
func TestTLSReload(t *testing.T) {
	p := newPKI(t)
	s := newServer(t)
	m := p.manager(t, listener.TLSOptions{})
	addr := s.serve(listener.TLS(s.tcp(), m))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reloaded := make(chan error, 10)
	go m.Watch(ctx, 50*time.Millisecond, nil, func(err error) { reloaded <- err })

	serial := func() string {
		nc, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool(t, p.ca), ServerName: "localhost"})
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		return nc.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	before := serial()

	oldTLS, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool(t, p.ca), ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	old := mqttClient(t, oldTLS, packet.V311)
	old.Connect(connect("stays"))
	old.Subscribe("reload/#", 0)

	// Renew: new files with a later modification time (each replaced
	// atomically, the chain before the key) that the poll sees. A poll
	// between the two sees the new chain with the old key and fails; the
	// watcher tries again at the next poll and loads the pair.
	future := time.Now().Add(2 * time.Second)
	chain, key, err := p.ca.Issue(devcert.Leaf{CommonName: "localhost", Hosts: []string{"localhost", "127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	mqtttest.WriteFile(t, p.certFile, chain, future)
	mqtttest.WriteFile(t, p.keyFile, key, future)
	for timeout := time.After(10 * time.Second); ; {
		select {
		case err := <-reloaded:
			if err != nil {
				t.Logf("reload between the two files: %v", err)
				continue
			}
		case <-timeout:
			t.Fatal("the renewed pair not loaded within 10s")
		}
		break
	}
	if after := serial(); after == before {
		t.Fatal("new handshakes still get the old certificate")
	}
	// An explicit reload (SIGHUP) works too.
	p.issueServer(t, "localhost", "127.0.0.1")
	if err := m.Reload(); err != nil {
		t.Fatal(err)
	}
	// A broken file keeps the current certificate.
	writeFile(t, p.keyFile, []byte("not a key"))
	if err := m.Reload(); err == nil {
		t.Fatal("Reload accepted a broken key")
	}
	serial()

	// The old connection still works.
	pub := dialTCPTLS(t, addr, p)
	pub.Send(&packet.Publish{Topic: "reload/x", Payload: []byte("still here")})
	if got := expectPublish(t, old, 3*time.Second); string(got.Payload) != "still here" {
		t.Fatalf("got %q", got.Payload)
	}
}

func dialTCPTLS(t *testing.T, addr string, p *pki) *mqtttest.Client {
	nc, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool(t, p.ca), ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	c := mqttClient(t, nc, packet.V311)
	c.Connect(connect("publisher"))
	return c
}

// SNI picks among several certificates.
func TestTLSSNI(t *testing.T) {
	p := newPKI(t)
	chain, key, err := p.ca.Issue(devcert.Leaf{CommonName: "b.example", Hosts: []string{"b.example"}})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, p.dir+"/b.pem", chain)
	writeFile(t, p.dir+"/b-key.pem", key)
	m := p.manager(t, listener.TLSOptions{Certs: []listener.KeyPair{
		{Cert: p.certFile, Key: p.keyFile}, {Cert: p.dir + "/b.pem", Key: p.dir + "/b-key.pem"},
	}})
	s := newServer(t)
	addr := s.serve(listener.TLS(s.tcp(), m))
	for _, name := range []string{"localhost", "b.example"} {
		nc, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool(t, p.ca), ServerName: name})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		nc.Close()
	}
}

// TLS 1.2 is the minimum by default.
func TestTLSMinVersion(t *testing.T) {
	p := newPKI(t)
	s := newServer(t)
	addr := s.serve(listener.TLS(s.tcp(), p.manager(t, listener.TLSOptions{})))
	_, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool(t, p.ca), ServerName: "localhost", MaxVersion: tls.VersionTLS11, MinVersion: tls.VersionTLS10})
	if err == nil {
		t.Fatal("TLS 1.1 accepted")
	}
}

func devcertCA(t *testing.T) *devcert.CA {
	ca, err := devcert.NewCA("client CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func clientCert(t *testing.T, ca *devcert.CA, cn string) tls.Certificate {
	chain, key, err := ca.Issue(devcert.Leaf{CommonName: cn, Client: true})
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.X509KeyPair(chain, key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pool(t *testing.T, ca *devcert.CA) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// peekListener shows the test each conn it hands to the broker.
type peekListener struct {
	net.Listener
	seen chan net.Conn
}

func (l *peekListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.seen <- c
	}
	return c, err
}
