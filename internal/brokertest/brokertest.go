// Package brokertest runs a Roost broker for the tests of other packages:
// on 127.0.0.1 with a port the OS picks, shut down when the test ends.
// (The broker package's own tests cannot use it: it imports broker.)
//
// StartAll serves one broker on every transport of rawclient.Transports
// (TCP, TLS, WebSocket, WebSocket over TLS, TCP behind the PROXY protocol)
// with certificates from a throwaway PKI, so that a suite can run each
// test over each of them; FailOnPanic fails a test whose broker log
// reports a panic, which a client may never notice.
package brokertest

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
)

// Start runs a Server with opts until t ends and returns it with its
// address. A nil Logger discards the logs and a zero SysInterval turns
// $SYS off, so tests see only their own traffic. At the end it shuts the
// server down, failing t if that fails, and waits for Serve to return.
func Start(t testing.TB, opts broker.Options) (*broker.Server, string) {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.SysInterval == 0 {
		opts.SysInterval = -1
	}
	s, err := broker.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, broker.ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return s, ln.Addr().String()
}
