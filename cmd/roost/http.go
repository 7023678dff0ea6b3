package main

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roost-mqtt/roost/auth"
	"github.com/roost-mqtt/roost/bridge"
	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/cluster"
	"github.com/roost-mqtt/roost/httpapi"
	"github.com/roost-mqtt/roost/internal/bridgeset"
	"github.com/roost-mqtt/roost/internal/config"
)

// httpServer is the --http server: metrics, health checks, the admin API
// and the console. A nil *httpServer is off and every method does nothing.
type httpServer struct {
	ln    net.Listener
	hs    *http.Server
	ready atomic.Bool
	done  chan error
	once  sync.Once

	bridgeStats func() []bridge.Stats // for /metrics and /api/bridges
	bridgeAdmin httpapi.BridgeAdmin   // for POST, PUT and DELETE /api/bridges
}

// listenHTTP opens c.Addr, or returns nil when the server is off. It runs
// beside the MQTT listeners, before the broker exists, so that a busy port
// stops start-up early.
func listenHTTP(c config.HTTP) (*httpServer, error) {
	if !c.Enabled() {
		return nil, nil
	}
	ln, err := net.Listen("tcp", c.Addr)
	if err != nil {
		return nil, err
	}
	return &httpServer{ln: ln, done: make(chan error, 1)}, nil
}

// start serves the HTTP API for srv. lns are the MQTT listeners as opened
// for cfg.Listeners: the console's MQTT pages use the WebSocket ones.
func (h *httpServer) start(cfg *config.Config, srv *broker.Server, opts broker.Options, lns []net.Listener, logger *slog.Logger) {
	if h == nil {
		return
	}
	o := httpapi.Options{Token: cfg.HTTP.Token, MetricsPublic: cfg.HTTP.MetricsPublic, Store: opts.Store,
		Ready: h.ready.Load, Logger: logger.With("component", "http"), Bridges: h.bridgeStats,
		BridgeAdmin: h.bridgeAdmin}
	if node, ok := opts.Cluster.(*cluster.Node); ok {
		o.Cluster = node.Stats
	}
	if cfg.HTTP.UsersFromPasswordFile {
		// config.HTTP.Check made sure auth.password_file is set, so
		// setupAuth loaded it, and reloads it when it changes.
		if a, ok := opts.Authenticator.(*auth.Authenticator); ok && a.Passwords != nil {
			o.Users = a.Passwords
		}
	}
	for i, ln := range lns {
		if s := cfg.Listeners[i].Scheme; s == "ws" || s == "wss" {
			o.WebSockets = append(o.WebSockets, s+"://"+ln.Addr().String()+cfg.Listeners[i].Path)
		}
	}
	h.hs = &http.Server{Handler: httpapi.New(srv, o), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
	logger.Info("http ready", "addr", h.ln.Addr().String(), "auth", httpAuthKind(cfg.HTTP), "metrics_public", cfg.HTTP.MetricsPublic)
	go func() { h.done <- h.hs.Serve(h.ln) }()
}

func httpAuthKind(c config.HTTP) string {
	switch {
	case c.Token != "" && c.UsersFromPasswordFile:
		return "token and password file"
	case c.Token != "":
		return "token"
	case c.UsersFromPasswordFile:
		return "password file"
	}
	return "none (loopback only)"
}

// setReady sets what /readyz answers.
func (h *httpServer) setReady(ok bool) {
	if h != nil {
		h.ready.Store(ok)
	}
}

// close stops the HTTP server: requests in progress get until ctx ends.
// Calls after the first do nothing.
func (h *httpServer) close(ctx context.Context) {
	if h == nil {
		return
	}
	h.once.Do(func() {
		if h.hs == nil { // never started
			h.ln.Close()
			return
		}
		if err := h.hs.Shutdown(ctx); err != nil {
			h.hs.Close()
		}
		<-h.done // http.ErrServerClosed
	})
}

// setBridges makes the HTTP server (if on) report the bridges and change
// them through the admin API.
func (h *httpServer) setBridges(s *bridgeset.Set) {
	if h != nil {
		h.bridgeStats = s.Stats
		h.bridgeAdmin = s
	}
}
