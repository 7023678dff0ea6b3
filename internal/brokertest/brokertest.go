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
	"log/slog"
	"net"
	"testing"

	"github.com/roost-mqtt/roost/broker"
)

// Start runs a Server with opts until t ends and returns it with its
// address. A nil Logger discards the logs and a zero SysInterval turns
// $SYS off, so tests see only their own traffic. At the end it shuts the
// server down, failing t if that fails, and waits for Serve to return.
func Start(t testing.TB, opts broker.Options) (*broker.Server, string) {
	t.Helper()
	opts = withDefaults(opts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, opts, []net.Listener{ln}), ln.Addr().String()
}

// withDefaults fills the options every test broker shares.
func withDefaults(opts broker.Options) broker.Options {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.SysInterval == 0 {
		opts.SysInterval = -1
	}
	return opts
}
