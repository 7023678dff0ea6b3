package listener_test

import (
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/devcert"
	"github.com/roost-mqtt/roost/listener"
)

// crl_file (mosquitto's crlfile): a revoked client certificate is
// refused, another from the same CA accepted; a CA without a CRL in the
// file, or with an expired one, has all its clients refused, as OpenSSL's
// CRL check does; a new CRL counts after a reload.
func TestClientCRL(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p+".tmp", data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(p+".tmp", p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ca, err := devcert.NewCA("client CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srvChain, srvKey, err := ca.Issue(devcert.Leaf{CommonName: "localhost", Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	client := func(cn string) (tls.Certificate, *big.Int) {
		chain, key, err := ca.Issue(devcert.Leaf{CommonName: cn, Client: true})
		if err != nil {
			t.Fatal(err)
		}
		c, err := tls.X509KeyPair(chain, key)
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return c, leaf.SerialNumber
	}
	good, _ := client("good")
	bad, badSerial := client("bad")
	crl := func(c *devcert.CA, validity time.Duration, serials ...*big.Int) []byte {
		b, err := c.CRL(serials, validity)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	crlFile := write("crl.pem", crl(ca, time.Hour, badSerial))
	m, err := listener.NewCertManager(listener.TLSOptions{Certs: []listener.KeyPair{{Cert: write("s.pem", srvChain), Key: write("s.key", srvKey)}},
		ClientCA: write("ca.pem", ca.CertPEM()), RequireClientCert: true, CRLFile: crlFile})
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := listener.TLS(tcp, m)
	defer ln.Close()
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM())
	// accepted reports whether the server side of a connection made with
	// cert completes its handshake (TLS 1.3 clients learn of a refused
	// certificate only after theirs completed, so the server's side is
	// what tells).
	accepted := func(cert tls.Certificate) bool {
		res := make(chan error, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				res <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			_, err = c.Read(make([]byte, 1))
			res <- err
		}()
		cc, err := tls.Dial("tcp", tcp.Addr().String(), &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}})
		if err == nil {
			cc.Write([]byte("x"))
			defer cc.Close()
		}
		return <-res == nil
	}
	if !accepted(good) || accepted(bad) {
		t.Fatalf("good accepted %v, revoked accepted %v; want true, false", accepted(good), accepted(bad))
	}
	for name, data := range map[string][]byte{
		"another CA's CRL": crl(func() *devcert.CA { c, _ := devcert.NewCA("other", time.Hour); return c }(), time.Hour),
		"an expired CRL":   crl(ca, -time.Second),
	} {
		write("crl.pem", data)
		if err := m.Reload(); err != nil {
			t.Fatal(err)
		}
		if accepted(good) {
			t.Errorf("with %s, a client of the CA was accepted", name)
		}
	}
	write("crl.pem", crl(ca, time.Hour))
	if err := m.Reload(); err != nil {
		t.Fatal(err)
	}
	if !accepted(bad) {
		t.Error("a CRL that no longer lists it still refuses the certificate")
	}
}
