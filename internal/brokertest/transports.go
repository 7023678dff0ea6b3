package brokertest

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
	"regexp"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/devcert"
	"github.com/roost-mqtt/roost/internal/rawclient"
	"github.com/roost-mqtt/roost/listener"
)

// PKI is a throwaway certificate authority and a server certificate for
// 127.0.0.1 and localhost signed by it, as PEM files: what a broker's
// mqtts:// and wss:// listeners serve and what peers (mosquitto_sub
// --cafile, mqtt.js ca) trust.
type PKI struct {
	CAFile, CertFile, KeyFile string
	pool                      *x509.CertPool
}

// NewPKI writes a new PKI to dir. It fails only if dir is not writable.
func NewPKI(dir string) (*PKI, error) {
	ca, err := devcert.NewCA("roost test CA", 24*time.Hour)
	if err != nil {
		return nil, err
	}
	chain, key, err := ca.Issue(devcert.Leaf{CommonName: "127.0.0.1", Hosts: []string{"127.0.0.1", "localhost"}})
	if err != nil {
		return nil, err
	}
	p := &PKI{CAFile: filepath.Join(dir, "ca.pem"), CertFile: filepath.Join(dir, "server.pem"),
		KeyFile: filepath.Join(dir, "server-key.pem"), pool: x509.NewCertPool()}
	p.pool.AddCert(ca.Cert)
	for name, data := range map[string][]byte{p.CAFile: ca.CertPEM(), p.CertFile: chain, p.KeyFile: key} {
		if err := writeAtomic(name, data); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// writeAtomic writes data to name through a temporary file and a rename,
// so that no reader sees half a file.
func writeAtomic(name string, data []byte) error {
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, name)
}

// ClientTLS returns a client configuration that trusts the PKI's CA only.
func (p *PKI) ClientTLS() *tls.Config { return &tls.Config{RootCAs: p.pool} }

// Dialer returns a raw client dialer for every transport that trusts the
// PKI's CA.
func (p *PKI) Dialer() rawclient.Dialer { return rawclient.Dialer{TLS: p.ClientTLS()} }

// Endpoints are the URLs a broker serves on, one per transport, in the
// form rawclient.Dialer takes (see rawclient.Transport.URL).
type Endpoints map[rawclient.Transport]string

// Listen opens, on 127.0.0.1 with ports the OS picks, one listener per
// transport of rawclient.Transports: TCP; TLS and WSS with the PKI's
// server certificate; WebSocket on /mqtt; and TCP behind the PROXY
// protocol. The WebSocket message limit follows opts.MaxPacketSize and
// their logs go to opts.Logger, as cmd/roost sets them up. The caller
// serves and closes the listeners.
func Listen(t testing.TB, opts broker.Options, pki *PKI) ([]net.Listener, Endpoints) {
	t.Helper()
	cm, err := listener.NewCertManager(listener.TLSOptions{Certs: []listener.KeyPair{{Cert: pki.CertFile, Key: pki.KeyFile}}})
	if err != nil {
		t.Fatal(err)
	}
	wssCM, err := listener.NewCertManager(listener.TLSOptions{Certs: []listener.KeyPair{{Cert: pki.CertFile, Key: pki.KeyFile}},
		NextProtos: []string{"http/1.1"}}) // WebSocket needs HTTP/1.1
	if err != nil {
		t.Fatal(err)
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var wsLimit int64
	if opts.MaxPacketSize > 0 {
		wsLimit = listener.WSMessageLimit(opts.MaxPacketSize)
	}
	var lns []net.Listener
	eps := Endpoints{}
	for _, tr := range rawclient.Transports() {
		tcp, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			for _, ln := range lns {
				ln.Close()
			}
			t.Fatal(err)
		}
		var ln net.Listener
		switch tr {
		case rawclient.TCP:
			ln = tcp
		case rawclient.TLS:
			ln = listener.TLS(tcp, cm)
		case rawclient.WS, rawclient.WSS:
			o := listener.WSOptions{MaxMessageSize: wsLimit, Logger: logger}
			if tr == rawclient.WSS {
				o.TLS = wssCM
			}
			ln = listener.WebSocket(tcp, o)
		case rawclient.Proxy:
			ln = listener.Proxy(tcp, listener.ProxyOptions{HeaderTimeout: 5 * time.Second, Logf: logger.Warn})
		}
		lns = append(lns, ln)
		eps[tr] = tr.URL(tcp.Addr().String())
	}
	return lns, eps
}

// StartAll is Start with a listener per transport (see Listen). A panic in
// Serve fails t instead of the test binary.
func StartAll(t testing.TB, opts broker.Options, pki *PKI) (*broker.Server, Endpoints) {
	t.Helper()
	opts = withDefaults(opts)
	lns, eps := Listen(t, opts, pki)
	return serve(t, opts, lns), eps
}

// serve runs a Server with opts on lns until t ends. A panic in Serve
// fails t instead of the test binary.
func serve(t testing.TB, opts broker.Options, lns []net.Listener) *broker.Server {
	t.Helper()
	s, err := broker.New(opts)
	if err != nil {
		for _, ln := range lns {
			ln.Close()
		}
		t.Fatal(err)
	}
	served := make(chan error, len(lns))
	for _, ln := range lns {
		go func() {
			defer func() {
				if r := recover(); r != nil {
					served <- fmt.Errorf("Serve(%s) panicked: %v", ln.Addr(), r)
				}
			}()
			served <- s.Serve(ln)
		}()
	}
	t.Cleanup(func() { stop(t, s, lns, served) })
	return s
}

func stop(t testing.TB, s *broker.Server, lns []net.Listener, served chan error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Errorf("Shutdown panicked: %v", r)
				for _, ln := range lns {
					ln.Close()
				}
			}
		}()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	}()
	for range lns {
		select {
		case err := <-served:
			if !errors.Is(err, broker.ErrServerClosed) {
				t.Errorf("Serve returned %v, want ErrServerClosed", err)
			}
		case <-ctx.Done():
			t.Errorf("Serve did not return within 10s of Shutdown")
			return
		}
	}
}

// panicLine matches a log line that reports a panic: a recovered one
// (slog's panic= attribute, or "panic" in the message) or a crash of the
// process (the runtime's "panic: " and "fatal error: ").
var panicLine = regexp.MustCompile(`(?m)^(.*(\spanic=|msg="[^"\n]*\bpanic|msg=\S*panic).*|panic: .*|fatal error: .*)$`)

// PanicLines returns the lines of a broker log that report a panic.
func PanicLines(log string) []string { return panicLine.FindAllString(log, -1) }

// FailOnPanic fails t if log reports a panic: a broker that recovered
// from one still has a bug, and the client that hit it may have seen
// nothing worse than a close.
func FailOnPanic(t testing.TB, log string) {
	t.Helper()
	lines := PanicLines(log)
	for i, l := range lines {
		if i == 3 {
			t.Errorf("... and %d more panic lines", len(lines)-i)
			break
		}
		if len(l) > 2000 {
			l = l[:2000] + "..."
		}
		t.Errorf("broker log reports a panic: %s", l)
	}
}
