package listener_test

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/devcert"
	"github.com/roost-mqtt/roost/listener"
)

// A directory of CAs (mosquitto's capath) is read whole, hash links or
// not: other files are skipped, a CA added later counts after a reload,
// and IdentitySubject names a client by its whole subject in RFC 2253
// form.
func TestClientCAPathAndSubject(t *testing.T) {
	dir := t.TempDir()
	newCA := func(name string) *devcert.CA {
		ca, err := devcert.NewCA(name, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return ca
	}
	srvCA, first, later := newCA("server CA"), newCA("first client CA"), newCA("later client CA")
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
	chain, key, err := srvCA.Issue(devcert.Leaf{CommonName: "localhost", Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := write("server.pem", chain), write("server.key", key)
	cas := filepath.Join(dir, "cas")
	if err := os.Mkdir(cas, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := listener.NewCertManager(listener.TLSOptions{Certs: []listener.KeyPair{{Cert: certFile, Key: keyFile}},
		ClientCAPath: cas, RequireClientCert: true}); err == nil || !strings.Contains(err.Error(), "no file in it holds PEM certificates") {
		t.Fatalf("an empty capath: %v", err)
	}
	write("cas/first.crt", first.CertPEM())
	write("cas/README", []byte("not a certificate\n"))
	m, err := listener.NewCertManager(listener.TLSOptions{Certs: []listener.KeyPair{{Cert: certFile, Key: keyFile}},
		ClientCAPath: cas, RequireClientCert: true, Identity: listener.IdentitySubject})
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
	roots.AppendCertsFromPEM(srvCA.CertPEM())
	// identify connects with a certificate from ca and returns the name
	// the server took from it, or the error.
	identify := func(ca *devcert.CA) (string, error) {
		chain, key, err := ca.Issue(devcert.Leaf{CommonName: "alice", Organization: []string{"Roost"}, Client: true})
		if err != nil {
			t.Fatal(err)
		}
		cert, err := tls.X509KeyPair(chain, key)
		if err != nil {
			t.Fatal(err)
		}
		type result struct {
			name string
			err  error
		}
		res := make(chan result, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				res <- result{err: err}
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Read(make([]byte, 1)); err != nil {
				res <- result{err: err}
				return
			}
			name, _ := c.(listener.CertIdentity).CertIdentity()
			res <- result{name: name}
		}()
		cc, err := tls.Dial("tcp", tcp.Addr().String(), &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}})
		if err == nil {
			cc.Write([]byte("x"))
			defer cc.Close()
		}
		r := <-res
		return r.name, r.err
	}
	if name, err := identify(first); err != nil || name != "CN=alice,O=Roost" {
		t.Fatalf("a client of the first CA: %q, %v; want CN=alice,O=Roost", name, err)
	}
	if _, err := identify(later); err == nil {
		t.Fatal("a client of a CA not yet in capath was accepted")
	}
	write("cas/later.pem", later.CertPEM())
	if err := m.Reload(); err != nil {
		t.Fatal(err)
	}
	if name, err := identify(later); err != nil || name != "CN=alice,O=Roost" {
		t.Fatalf("a client of the CA added to capath: %q, %v", name, err)
	}
}
