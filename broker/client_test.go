package broker

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// startServer runs a Server on 127.0.0.1:0 for one test.
func startServer(t testing.TB, opts Options) (*Server, string) {
	t.Helper()
	return startServerWrapped(t, opts, nil)
}

// startServerWrapped is startServer with the listener wrapped by wrap, when
// not nil: a test's hold on what the server's sockets are.
func startServerWrapped(t testing.TB, opts Options, wrap func(net.Listener) net.Listener) (*Server, string) {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.SysInterval == 0 {
		opts.SysInterval = -1
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	serve := ln
	if wrap != nil {
		serve = wrap(ln)
	}
	go func() { served <- s.Serve(serve) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return s, ln.Addr().String()
}

func dial(t testing.TB, addr string, v packet.Version) *mqtttest.Client {
	return mqtttest.Dial(t, addr, v)
}

func netListen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }
