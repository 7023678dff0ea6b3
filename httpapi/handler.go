package httpapi

import (
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/roost-mqtt/roost/bridge"
	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/cluster"
	"github.com/roost-mqtt/roost/console"
)

// Options configure a Handler. The zero value serves everything to anyone.
type Options struct {
	// Token, when set, is accepted as a Bearer token or as the password
	// of Basic authentication with any user name.
	Token string
	// Users, when set, checks the user and password of Basic
	// authentication, typically the broker's password file.
	Users PasswordChecker
	// MetricsPublic serves /metrics without credentials.
	MetricsPublic bool
	// Store is the broker's store; if it has a Size method the store
	// size is a metric.
	Store any
	// WebSockets are the ws:// and wss:// URLs of the broker's WebSocket
	// listeners, as bound (an unspecified host such as 0.0.0.0 is replaced
	// by the console with the host it was loaded from). The console's
	// MQTT pages connect to the first; with none they say so.
	WebSockets []string
	// Ready reports whether the broker serves clients, for /readyz. Nil
	// means always.
	Ready func() bool
	// Logger gets one line per refused or failed request; nil means
	// slog.Default().
	Logger *slog.Logger
	// Bridges, when set, returns the figures of the running bridges, for
	// /metrics (roost_bridge_*) and GET /api/bridges.
	Bridges func() []bridge.Stats
	// BridgeAdmin, when set, lets the admin API add, change and remove
	// bridges (POST, PUT and DELETE /api/bridges).
	BridgeAdmin BridgeAdmin
	// Cluster, when set (a cluster node), returns this node's view of
	// the cluster, for /metrics (roost_cluster_*) and GET /api/cluster.
	Cluster func() cluster.Stats
}

// PasswordChecker verifies a user name and password; auth.PasswordFile is
// one. Check returns nil when they match and an error otherwise.
type PasswordChecker interface {
	Check(user string, password []byte) error
}

// Sizer is implemented by stores that know how many bytes they take.
type Sizer interface{ Size() (int64, error) }

// Handler serves the metrics, health checks, admin API and console.
type Handler struct {
	srv  *broker.Server
	opts Options
	log  *slog.Logger
	mux  *http.ServeMux
	auth *authenticator
}

// New returns the handler for srv. It registers its metrics in a registry
// of its own (with the Go runtime and process collectors), never in
// Prometheus's global one, so that several handlers can coexist in tests.
func New(srv *broker.Server, opts Options) *Handler {
	h := &Handler{srv: srv, opts: opts, log: opts.Logger, mux: http.NewServeMux(),
		auth: newAuthenticator(opts.Token, opts.Users)}
	if h.log == nil {
		h.log = slog.Default()
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(newCollector(srv, opts.Store, h.log),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if opts.Bridges != nil {
		reg.MustRegister(bridgeCollector{opts.Bridges})
	}
	if opts.Cluster != nil {
		reg.MustRegister(clusterCollector{opts.Cluster})
	}
	metrics := promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slogPrinter{h.log}})

	h.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { writeText(w, http.StatusOK, "ok") })
	h.mux.HandleFunc("GET /readyz", h.readyz)
	if opts.MetricsPublic {
		h.mux.Handle("GET /metrics", metrics)
	} else {
		h.mux.Handle("GET /metrics", h.private(metrics))
	}
	h.routeAPI()
	// Profiles, behind the same credentials as the admin API: the way to
	// see where a production broker spends its CPU or memory.
	h.mux.Handle("GET /debug/pprof/", h.private(http.HandlerFunc(pprof.Index)))
	h.mux.Handle("GET /debug/pprof/profile", h.private(http.HandlerFunc(pprof.Profile)))
	h.mux.Handle("GET /debug/pprof/trace", h.private(http.HandlerFunc(pprof.Trace)))
	assets, err := fs.Sub(console.Assets, "web")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	h.mux.Handle("GET /", h.private(consoleHandler(assets)))
	return h
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	h.mux.ServeHTTP(w, r)
}

func (h *Handler) readyz(w http.ResponseWriter, _ *http.Request) {
	if h.opts.Ready != nil && !h.opts.Ready() {
		writeText(w, http.StatusServiceUnavailable, "not ready")
		return
	}
	writeText(w, http.StatusOK, "ready")
}

func writeText(w http.ResponseWriter, code int, s string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(s + "\n"))
}

// slogPrinter adapts a slog.Logger to promhttp's ErrorLog.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Println(v ...any) { p.log.Warn("metrics", "err", v) }
