package load

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/devcert"
	"github.com/roost-mqtt/roost/listener"
)

// serveOn runs a broker on ln for one test.
func serveOn(t *testing.T, ln net.Listener) {
	t.Helper()
	s, err := broker.New(broker.Options{Logger: slog.New(slog.DiscardHandler), SysInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		<-served
	})
}

// testCert returns a server certificate for 127.0.0.1 and a pool that
// trusts it.
func testCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	ca, err := devcert.NewCA("roost bench test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	chain, key, err := ca.Issue(devcert.Leaf{CommonName: "127.0.0.1", Hosts: []string{"127.0.0.1"}, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(chain, key)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.CertPEM())
	return cert, pool
}

func TestTransports(t *testing.T) {
	t.Parallel()
	cert, pool := testCert(t)
	serverTLS := &tls.Config{Certificates: []tls.Certificate{cert}}
	listen := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	tests := []struct {
		scheme string
		wrap   func(net.Listener) net.Listener
	}{
		{"mqtts", func(ln net.Listener) net.Listener { return tls.NewListener(ln, serverTLS) }},
		{"ws", func(ln net.Listener) net.Listener {
			return listener.WebSocket(ln, listener.WSOptions{Logger: slog.New(slog.DiscardHandler)})
		}},
		{"wss", func(ln net.Listener) net.Listener {
			return listener.WebSocket(tls.NewListener(ln, serverTLS), listener.WSOptions{Logger: slog.New(slog.DiscardHandler)})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.scheme, func(t *testing.T) {
			ln := listen()
			addr := ln.Addr().String()
			serveOn(t, tt.wrap(ln))
			cfg := short(tt.scheme+"://"+addr, Pairs)
			cfg.Pairs, cfg.QoS, cfg.TLS = 2, 1, &tls.Config{RootCAs: pool}
			checkTraffic(t, run(t, cfg), 1)
			// Idle connections dial with small buffers.
			cfg = short(tt.scheme+"://"+addr, Connections)
			cfg.Conns, cfg.TLS = 30, &tls.Config{RootCAs: pool}
			if st := run(t, cfg).Connections; st.Opened != 30 || st.Failed != 0 {
				t.Errorf("connections %+v", st)
			}
		})
	}
}

// A certificate the client does not trust fails the run at setup.
func TestTLSUntrusted(t *testing.T) {
	t.Parallel()
	cert, _ := testCert(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveOn(t, tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}}))
	_, err = Run(context.Background(), short("mqtts://"+ln.Addr().String(), Pairs))
	var uerr x509.UnknownAuthorityError
	if !errors.As(err, &uerr) {
		t.Errorf("Run: %v, want an unknown authority error", err)
	}
}

func TestLoopbackSources(t *testing.T) {
	t.Parallel()
	for host, want := range map[string]int{"127.0.0.1": 254, "localhost": 254, "127.0.0.9": 254, "10.0.0.1": 0, "::1": 0, "example.com": 0} {
		got := len(loopbackSources(host))
		if !spreadLoopback {
			want = 0
		}
		if got != want {
			t.Errorf("loopbackSources(%q): %d addresses, want %d", host, got, want)
		}
	}
}

func TestHistogram(t *testing.T) {
	t.Parallel()
	h := newHistogram()
	for i := int64(1); i <= 100000; i++ {
		h.record(i * 1000) // 1 µs .. 100 ms, uniform
	}
	st := h.stats()
	for _, c := range []struct {
		name      string
		got, want float64
	}{{"p50", st.P50, 50000}, {"p90", st.P90, 90000}, {"p99", st.P99, 99000}, {"max", st.Max, 100000}, {"mean", st.Mean, 50000.5}} {
		if d := (c.got - c.want) / c.want; d > 0.02 || d < -0.02 {
			t.Errorf("%s = %.1f µs, want %.1f within 2%%", c.name, c.got, c.want)
		}
	}
	for _, v := range []uint64{0, 1, 63, 64, 65, 127, 128, 1000, 1 << 40, 1<<63 + 5} {
		if i := bucketOf(v); i >= numBuckets {
			t.Errorf("bucketOf(%d) = %d, out of range", v, i)
		} else if mid := bucketMid(i); float64(mid) < float64(v)*0.98 || float64(mid) > float64(v)*1.02+1 {
			t.Errorf("bucketMid(bucketOf(%d)) = %d", v, mid)
		}
	}
}
