package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/cluster"
	"github.com/roost-mqtt/roost/internal/bridgeset"
	"github.com/roost-mqtt/roost/internal/config"
	"github.com/roost-mqtt/roost/internal/memtrim"
	"github.com/roost-mqtt/roost/internal/sdnotify"
	"github.com/roost-mqtt/roost/store"
)

// shutdownTimeout bounds how long a signal-initiated shutdown waits for
// clients to be disconnected and their pending writes flushed.
const shutdownTimeout = 10 * time.Second

const serveHelp = `Runs the MQTT broker until SIGINT or SIGTERM, then shuts it down cleanly
(MQTT 5 clients get DISCONNECT 0x8B Server shutting down) and exits 0.
Logs go to stderr; one "listener ready" line per listener names the
address it is bound to.

With no flags it listens on ` + config.DefaultListenURL + ` and accepts clients
without a username from this machine only (--allow-anonymous: from anywhere;
a password file or hook in the config refuses them). Flags override the
config file; --listen replaces the file's listeners. mqtts:// and wss://
listeners given with --listen use --tls-cert and --tls-key ('roost cert dev'
makes a pair for trying them locally). SIGHUP reloads TLS certificates and the auth password
and ACL files (see docs/security.md), and the bridges (docs/bridges.md).
--config also reads a mosquitto.conf as it is.`

func runServe(ctx context.Context, args []string, std stdio) int {
	stderr := std.err
	cfg, code, ok := serveConfig(args, stderr)
	if !ok {
		return code
	}
	logger := newLogger(stderr, cfg.Log)
	// Under systemd (Type=notify) the unit is started once the listeners
	// accept connections, not when the process exists.
	notify := sdnotify.New(os.Getenv("NOTIFY_SOCKET"))
	if err := serve(ctx, cfg, logger, notify); err != nil {
		logger.Error("serve failed", "err", err)
		return 1
	}
	return 0
}

// serveConfig parses serve's flags and the config file they name into one
// Config. On failure it has reported the problem on stderr and returns the
// exit code with ok false.
func serveConfig(args []string, stderr io.Writer) (cfg *config.Config, code int, ok bool) {
	fs := newFlagSet("serve", "", serveHelp, stderr)
	var (
		file      = fs.String("config", "", "read the YAML config `file` (see docs/config.md)")
		listeners []config.Listener
		tlsCert   = fs.String("tls-cert", "", "certificate chain `file` for the mqtts:// and wss:// --listen listeners")
		tlsKey    = fs.String("tls-key", "", "private key `file` for --tls-cert")
		level     *slog.Level
		format    *config.LogFormat
		data      = fs.String("data", "", "keep sessions and retained messages in `dir` (default ./data, or data beside the --config file)")
		memory    = fs.Bool("memory", false, "keep everything in memory: a restart loses sessions, queues and retained messages")
		syncMode  *store.Sync
		httpAddr  = fs.String("http", "", "serve metrics, the admin API and the web console on `addr` (HOST:PORT; see docs/observability.md)")
		httpToken = fs.String("http-token", "", "require `token` for --http (Bearer, or the Basic password); needed off loopback unless the config file sets http.users_from_password_file")
	)
	fs.Func("sync", "when the store syncs to disk: always (default), none, or an interval such as 100ms", func(s string) error {
		sy, err := store.ParseSync(s)
		syncMode = &sy
		return err
	})
	var allowAnon *bool
	fs.BoolFunc("allow-anonymous", "accept clients without a username from anywhere: sets auth.allow_anonymous (--allow-anonymous=false refuses them). Unset, they are refused once passwords, a hook or certificate identities are configured, else accepted from this machine only (docs/security.md)", func(s string) error {
		b, err := strconv.ParseBool(s)
		allowAnon = &b
		return err
	})
	var minFree *int64
	fs.Func("min-free", "refuse new QoS 1/2 messages while the data disk has less than `size` free (such as 256MiB, the default; 0: no check)", func(s string) error {
		n, err := config.ParseSize(s)
		if err == nil && n > math.MaxInt64 {
			err = fmt.Errorf("size %q is too large", s)
		}
		v := int64(n)
		minFree = &v
		return err
	})
	var ballast *int64
	fs.Func("ballast", "keep `size` of space reserved in the data directory, released when a write finds the disk full (such as 64MiB, the default; 0: none)", func(s string) error {
		n, err := config.ParseSize(s)
		if err == nil && n > math.MaxInt64 {
			err = fmt.Errorf("size %q is too large", s)
		}
		v := int64(n)
		ballast = &v
		return err
	})
	fs.Func("listen", "accept clients on `url`: mqtt://H:P, mqtts://H:P, ws://H:P/PATH or wss://H:P/PATH (repeatable)", func(s string) error {
		ln, err := config.ParseListener(s)
		listeners = append(listeners, ln)
		return err
	})
	var (
		node          = fs.String("node", "", "this node's `name` in a cluster (see docs/cluster.md)")
		clusterListen = fs.String("cluster-listen", "", "accept other cluster nodes on `addr` (IP:PORT; outgoing cluster connections are bound to the IP)")
		clusterPeers  []string
		clusterCert   = fs.String("cluster-tls-cert", "", "this node's certificate `file` for the cluster port (mutual TLS; with --cluster-tls-key and --cluster-tls-ca)")
		clusterKey    = fs.String("cluster-tls-key", "", "the key `file` of --cluster-tls-cert")
		clusterCA     = fs.String("cluster-tls-ca", "", "the CA `file` that signed every node's cluster certificate")
		clusterSecret = fs.String("cluster-secret-file", "", "a `file` holding the secret every node of the cluster shares")
	)
	fs.Func("cluster-peer", "another cluster node's --cluster-listen `addr` (repeatable)", func(s string) error {
		clusterPeers = append(clusterPeers, s)
		return nil
	})
	fs.Func("log-level", "log `level`: debug, info, warn or error (default info)", func(s string) error {
		l, err := config.ParseLogLevel(s)
		level = &l
		return err
	})
	fs.Func("log-format", "log `format`: text or json (default text)", func(s string) error {
		f, err := config.ParseLogFormat(s)
		format = &f
		return err
	})
	if code, ok := parseFlags(fs, args); !ok {
		return nil, code, false
	}

	cfg = config.Default()
	if *file != "" {
		var err error
		if cfg, err = config.Load(*file); err != nil {
			fmt.Fprintf(stderr, "roost serve: %v\n", err)
			return nil, 1, false
		}
	}
	if listeners != nil {
		if (*tlsCert == "") != (*tlsKey == "") {
			fmt.Fprintln(stderr, "roost serve: --tls-cert and --tls-key go together")
			return nil, 2, false
		}
		for i := range listeners {
			if listeners[i].IsTLS() && *tlsCert != "" {
				listeners[i].TLS.Certs = []config.KeyPair{{Cert: *tlsCert, Key: *tlsKey}}
			}
		}
		cfg.Listeners = listeners
	}
	if level != nil {
		cfg.Log.Level = *level
	}
	if format != nil {
		cfg.Log.Format = *format
	}
	if *data != "" {
		cfg.Store.Data = *data
	}
	if *memory {
		cfg.Store.Memory = true
	}
	if syncMode != nil {
		cfg.Store.Sync = *syncMode
	}
	if minFree != nil {
		cfg.Store.MinFree = *minFree
	}
	if ballast != nil {
		cfg.Store.Ballast = *ballast
	}
	if *httpAddr != "" {
		cfg.HTTP.Addr = *httpAddr
	}
	if *httpToken != "" {
		cfg.HTTP.Token = *httpToken
	}
	if allowAnon != nil {
		cfg.Auth.AllowAnonymous = allowAnon
	}
	if *node != "" {
		cfg.Cluster.Node = *node
	}
	if *clusterListen != "" {
		cfg.Cluster.Listen = *clusterListen
	}
	if clusterPeers != nil {
		cfg.Cluster.Peers = clusterPeers
	}
	for _, f := range []struct{ flag, dst *string }{{clusterCert, &cfg.Cluster.TLS.Cert}, {clusterKey, &cfg.Cluster.TLS.Key},
		{clusterCA, &cfg.Cluster.TLS.CA}, {clusterSecret, &cfg.Cluster.SecretFile}} {
		if *f.flag != "" {
			*f.dst = *f.flag
		}
	}
	if cfg.Cluster.Enabled() {
		cfg.Cluster.Data = cfg.ClusterData()
		if err := cfg.Cluster.Check(); err != nil {
			fmt.Fprintf(stderr, "roost serve: %v\n", err)
			return nil, 2, false
		}
	}
	if err := checkListeners(cfg.Listeners); err != nil {
		fmt.Fprintf(stderr, "roost serve: %v\n", err)
		return nil, 2, false
	}
	if err := checkAuth(cfg); err != nil {
		fmt.Fprintf(stderr, "roost serve: %v\n", err)
		return nil, 2, false
	}
	if err := cfg.HTTP.Check(&cfg.Auth); err != nil {
		fmt.Fprintf(stderr, "roost serve: %v\n", err)
		return nil, 2, false
	}
	return cfg, 0, true
}

func newLogger(w io.Writer, c config.Log) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.Level}
	if c.Format == config.LogJSON {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// serve runs a broker on cfg's listeners until ctx ends, then shuts it down.
// It logs "listener ready" with the bound address for each listener once it
// accepts connections, and tells notify (a service manager) it is ready
// then and stopping at the end. It returns nil after a clean shutdown.
func serve(ctx context.Context, cfg *config.Config, logger *slog.Logger, notify *sdnotify.Notifier) error {
	logger.Info("roost starting", "version", version)
	hups, stopHups := watchHangups(ctx, logger)
	defer stopHups()
	for _, w := range cfg.Warnings {
		logger.Warn(w)
	}
	lns, certs, err := openListeners(cfg.Listeners, cfg.Limits.MaxPacketSize, logger)
	if err != nil {
		return err
	}
	defer closeAll(lns)
	defer watchCerts(ctx, certs, logger, hups.subscribe())()
	web, err := listenHTTP(cfg.HTTP)
	if err != nil {
		return fmt.Errorf("http: %w", err)
	}
	defer web.close(context.WithoutCancel(ctx)) // on early returns; a no-op after the shutdown below
	// The broker is made after listening so that a busy port leaves nothing
	// of it running; clients that connect meanwhile wait in the backlog.
	opts := cfg.BrokerOptions(logger)
	stopAuth, err := setupAuth(ctx, cfg, &opts, logger, hups)
	if err != nil {
		return err
	}
	defer stopAuth()
	if cfg.Cluster.Enabled() {
		node, err := cluster.Start(cfg.Cluster, opts.MaxPacketSize, logger)
		if err != nil {
			return err
		}
		defer node.Close() // after the broker's Shutdown below
		opts.Cluster = node
	}
	if opts.Store, err = openStore(cfg.Store, logger); err != nil {
		return err
	}
	if node, ok := opts.Cluster.(*cluster.Node); ok {
		// Persistent sessions are replicated through the cluster
		// (docs/cluster.md); the node's own store is its local copy.
		opts.Store = node.Sessions(opts.Store)
	}
	srv, err := broker.New(opts) // restores the store's state
	if err != nil {
		opts.Store.Close()
		return err
	}
	if node, ok := opts.Cluster.(*cluster.Node); ok {
		if err := node.Attach(srv); err != nil {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
			srv.Shutdown(sctx)
			cancel()
			return err
		}
	}
	bridges, err := bridgeset.Start(ctx, cfg, srv, logger, hups.subscribe())
	if err != nil {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
		srv.Shutdown(sctx)
		cancel()
		return err
	}
	web.setBridges(bridges)
	web.start(cfg, srv, opts, lns, logger)
	for i, ln := range lns {
		logger.Info("listener ready", "addr", ln.Addr().String(), "scheme", cfg.Listeners[i].Scheme)
	}

	done := make(chan error, len(lns))
	for _, ln := range lns {
		go func() { done <- srv.Serve(ln) }()
	}
	web.setReady(true)
	if err := notify.Ready(); err != nil {
		logger.Warn("could not tell the service manager that Roost is ready", "err", err)
	}
	notify.Status(fmt.Sprintf("serving MQTT on %d listener(s)", len(lns)))
	trimCtx, stopTrim := context.WithCancel(ctx)
	defer stopTrim()
	go memtrim.Run(trimCtx, memtrim.Default(), logger) // RSS follows live data after bursts
	pending := len(lns)
	var serveErr error
	select {
	case <-ctx.Done():
		logger.Info("shutting down", "timeout", shutdownTimeout)
	case serveErr = <-done:
		// Serve returns before Shutdown only when its listener fails for good.
		pending--
		logger.Error("listener failed, shutting down", "err", serveErr)
	}
	notify.Stopping()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	web.setReady(false)
	bridges.Close(sctx) // first: what they did not forward stays queued in their sessions
	err = srv.Shutdown(sctx)
	web.close(sctx)
	closeAll(lns) // every Serve returns, even if Shutdown did not get that far
	for ; pending > 0; pending-- {
		<-done
	}
	if serveErr != nil {
		return fmt.Errorf("serve: %w", serveErr)
	}
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	logger.Info("stopped")
	return nil
}

// openStore opens the store c describes: on disk unless c.Memory.
func openStore(c config.Store, logger *slog.Logger) (broker.Store, error) {
	if c.Memory {
		logger.Info("store in memory: nothing survives a restart")
		return store.NewMemory(), nil
	}
	logger.Info("opening store", "data", c.Data, "sync", c.Sync.String(), "min_free", c.MinFree, "ballast", c.Ballast)
	o := c.DiskOptions()
	o.Logger = logger
	return store.Open(c.Data, o)
}

func closeAll(lns []net.Listener) {
	for _, ln := range lns {
		_ = ln.Close() // usually already closed by Shutdown: net.ErrClosed
	}
}
