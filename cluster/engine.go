package cluster

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// engine is the embedded nats-server of one node and this node's own
// in-process client connection to it. Between nodes NATS uses routes: one
// hop, by interest, re-established by NATS when a peer comes back.
type engine struct {
	srv     *server.Server
	nc      *nats.Conn
	proxies []*bindProxy
	refuser *refuser
	log     *slog.Logger
}

// startupTimeout bounds how long the embedded server may take to listen.
const startupTimeout = 10 * time.Second

// maxPayloadSlack is what a forwarded message needs besides its MQTT packet.
const maxPayloadSlack = 64 << 10

// minMaxPayload is the least NATS message size a node accepts, whatever the
// broker's largest packet: a node's interest goes out whole in one message
// (a snapshot, or the changes of one moment), about 20 bytes a filter, and
// so does a session handed over with its queue. With the broker's default
// packet limit (1 MiB) a node restarting with 100,000 persistent sessions
// could neither announce nor snapshot its interest ("maximum payload
// exceeded"): no other node forwarded to it. 8 MiB, nats-server's
// recommended ceiling, holds about 400,000 filters.
const minMaxPayload = 8 << 20

// startEngine starts the embedded NATS server for cfg and connects to it
// in-process. maxPacket is the broker's largest packet, which a forwarded
// message must fit beside.
func startEngine(cfg *Config, maxPacket uint32, log *slog.Logger) (*engine, error) {
	host, portStr, _ := net.SplitHostPort(cfg.Listen) // checked by Config.Check
	port, _ := strconv.Atoi(portStr)
	bindIP := net.ParseIP(host)
	e := &engine{log: log}
	// nats-server tells its peers about each other so they can dial
	// "implicit" routes; such a dial would not go through a bind proxy.
	// With every node listing every other as a peer they are never
	// needed, so the address a node advertises for them refuses every
	// connection: NATS tries an implicit route once and gives up. (A
	// listener that accepted and closed made NATS redial the implicit
	// route at once, for ever: about 20 connections a second.)
	refuser, err := newRefuser(bindIP)
	if err != nil {
		return nil, err
	}
	e.refuser = refuser
	var routeTLS *tls.Config
	if cfg.TLS.enabled() {
		if routeTLS, err = cfg.TLS.config(); err != nil {
			e.close()
			return nil, err
		}
	}
	var routePass string
	if cfg.SecretFile != "" {
		if routePass, err = readSecret(cfg.SecretFile, log); err != nil {
			e.close()
			return nil, err
		}
	}
	routes := make([]*url.URL, 0, len(cfg.Peers))
	for _, p := range cfg.Peers {
		bp, err := newBindProxy(bindIP, p, log)
		if err != nil {
			e.close()
			return nil, err
		}
		e.proxies = append(e.proxies, bp)
		u := &url.URL{Scheme: "nats", Host: bp.ln.Addr().String()}
		if routePass != "" {
			u.User = url.UserPassword(routeUser, routePass)
		}
		routes = append(routes, u)
	}
	var tb [24]byte
	rand.Read(tb[:])
	token := hex.EncodeToString(tb[:])
	opts := &server.Options{
		ServerName: cfg.Node,
		// Roost's own connection is in-process, and nothing else is
		// meant to speak NATS to a node; but nats-server starts its
		// routes only after its client listener is up (DontListen would
		// leave them waiting forever). So the client port is a random
		// one on loopback, closed to anyone without a random token.
		Host:          "127.0.0.1",
		Port:          server.RANDOM_PORT,
		Authorization: token,
		// The time a client has to send its CONNECT (nats-server's
		// default 2 s, counted from the connection's opening): on a
		// loaded host the node's own in-process handshake took longer,
		// and the node exited at its start ("connecting in-process:
		// nats: Authentication Timeout", TestClusterRestartedNodeCleanWills
		// at a load of 100). Only Roost's client connects with the token.
		AuthTimeout: startupTimeout.Seconds(),
		NoSigs:      true,
		MaxPayload:  int32(min(max(int64(maxPacket)+maxPayloadSlack, minMaxPayload), 64<<20)),
		// Raised so that a subject made from the longest MQTT topic
		// (65535 bytes, escaped) fits the control line of a route.
		MaxControlLine: 1 << 20,
		JetStream:      true,
		StoreDir:       cfg.Data, // NATS adds a "jetstream" directory
		Cluster: server.ClusterOpts{
			Name: cfg.Name,
			Host: host,
			Port: port,
			// Peers are dialled only through the bind proxies; see
			// docs/cluster.md on why every peer lists every other.
			NoAdvertise: true,
			Advertise:   refuser.addr,
			// A peer that fails these is refused, and NATS logs
			// why on this node (an authentication error, a TLS
			// handshake error naming the certificate).
			TLSConfig:  routeTLS,
			TLSTimeout: 5,
		},
		Routes: routes,
	}
	if routePass != "" {
		opts.Cluster.Username, opts.Cluster.Password = routeUser, routePass
	}
	if cfg.SyncInterval == 0 {
		opts.SyncAlways = true
		opts.SyncInterval = 2 * time.Minute // unused with SyncAlways; NATS wants a value
	} else {
		opts.SyncInterval = cfg.SyncInterval
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		e.close()
		return nil, fmt.Errorf("cluster engine: %w", err)
	}
	nl := &natsLogger{log: log.With("component", "nats")}
	srv.SetLoggerV2(nl, false, false, false)
	e.srv = srv
	srv.Start()
	if !srv.ReadyForConnections(startupTimeout) {
		err := nl.fatal()
		if err == nil {
			err = errors.New("not ready in time")
		}
		e.close()
		return nil, fmt.Errorf("cluster engine on %s: %w", cfg.Listen, err)
	}
	if err := nl.fatal(); err != nil {
		e.close()
		return nil, fmt.Errorf("cluster engine on %s: %w", cfg.Listen, err)
	}
	nc, err := connectInProcess(srv, "roost-"+cfg.Node, token, log)
	if err != nil {
		e.close()
		return nil, fmt.Errorf("cluster engine: connecting in-process: %w", err)
	}
	e.nc = nc
	return e, nil
}

// inProcessTries is how many times a node tries its in-process handshake
// before its start fails.
const inProcessTries = 3

// connectInProcess connects the node's own client to its embedded server
// through p, trying the handshake again when it fails. nats-server sends a
// new client its first PING 2 to 2.4 s after the connection opens; when
// the server has not answered the client's CONNECT and PING by then (a
// loaded host: the suite's 2 cores at a load of 90, the server's read loop
// 2.4 s on the CONNECT), the PING comes before the PONG, and nats.go fails
// the handshake ("nats: expected 'PONG', got 'PING'", nats-server issue
// 1174): the node exited at its start (TestClusterReplicasReplaced's n3).
// A new connection has a new 2 s. TestConnectInProcessPingFirst.
// Each try gets startupTimeout, as the server's start does, not nats.go's
// 2 s: on a loaded host the server's first INFO came later than that and
// the node exited ("connecting in-process: read pipe: i/o timeout").
func connectInProcess(p nats.InProcessConnProvider, name, token string, log *slog.Logger) (*nats.Conn, error) {
	for try := 1; ; try++ {
		nc, err := nats.Connect("", nats.InProcessServer(p), nats.Name(name), nats.Token(token),
			nats.Timeout(startupTimeout), nats.MaxReconnects(-1), nats.ReconnectBufSize(-1))
		if err == nil || try == inProcessTries {
			return nc, err
		}
		log.Warn("cluster engine: in-process handshake failed; trying again", "try", try, "err", err)
	}
}

// routedNodes returns the names of the nodes this node has a route to.
func (e *engine) routedNodes() (map[string]bool, error) {
	rz, err := e.srv.Routez(&server.RoutezOptions{})
	if err != nil {
		return nil, err
	}
	names := make(map[string]bool, len(rz.Routes))
	for _, r := range rz.Routes {
		names[r.RemoteName] = true
	}
	return names, nil
}

// close stops the client, the server and the proxies.
func (e *engine) close() {
	if e.nc != nil {
		e.nc.Close()
	}
	if e.srv != nil {
		e.srv.Shutdown()
		e.srv.WaitForShutdown()
	}
	for _, p := range e.proxies {
		p.close()
	}
	if e.refuser != nil {
		e.refuser.Close()
	}
}

// bindProxy gives nats-server, which has no setting for the source address
// of its route connections, one: it listens on loopback and relays each
// connection to one peer from a socket bound to the node's address.
// NATS dials the proxy; the peer sees a connection from the node's address.
type bindProxy struct {
	ln     net.Listener
	peer   string
	dialer net.Dialer
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newBindProxy(ip net.IP, peer string, log *slog.Logger) (*bindProxy, error) {
	// The leg from NATS to the proxy stays inside the host, on loopback.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("cluster: proxy for peer %s: %w", peer, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &bindProxy{ln: ln, peer: peer, log: log, ctx: ctx, cancel: cancel,
		dialer: net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 2 * time.Second}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

func (p *bindProxy) accept() {
	defer p.wg.Done()
	var backoff time.Duration
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if p.ctx.Err() != nil {
				return
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			p.log.Warn("cluster proxy accept failed; retrying", "peer", p.peer, "err", err, "backoff", backoff)
			select {
			case <-time.After(backoff):
			case <-p.ctx.Done():
				return
			}
			continue
		}
		backoff = 0
		p.wg.Add(1)
		go p.relay(c)
	}
}

// relay copies between NATS's connection c and a new bound connection to
// the peer until either side closes; then both close, so NATS sees a peer
// that went away as a closed route and reconnects (through the proxy).
func (p *bindProxy) relay(c net.Conn) {
	defer p.wg.Done()
	defer c.Close()
	pc, err := p.dialer.DialContext(p.ctx, "tcp", p.peer)
	if err != nil {
		p.log.Debug("cluster peer unreachable", "peer", p.peer, "err", err)
		return
	}
	defer pc.Close()
	stop := context.AfterFunc(p.ctx, func() { c.Close(); pc.Close() })
	defer stop()
	done := make(chan struct{})
	go func() {
		io.Copy(pc, c)
		pc.Close()
		c.Close()
		close(done)
	}()
	io.Copy(c, pc)
	c.Close()
	pc.Close()
	<-done
}

func (p *bindProxy) close() {
	p.cancel()
	p.ln.Close()
	p.wg.Wait()
}

// natsLogger passes nats-server's log lines to slog, and keeps the first
// fatal one: nats-server reports a port it cannot listen on that way and
// expects the process to exit, which an embedded server must not.
type natsLogger struct {
	log *slog.Logger
	mu  sync.Mutex
	err error
}

func (l *natsLogger) Noticef(format string, v ...any) { l.log.Info(fmt.Sprintf(format, v...)) }
func (l *natsLogger) Warnf(format string, v ...any) {
	if strings.HasPrefix(format, natsInsecureRoutes) {
		// Roost checks the chain itself (TLS.config); only the host
		// name, which is the bind proxy's, goes unchecked.
		l.log.Debug("cluster tls: peers' certificates are checked against the cluster CA, without host names")
		return
	}
	l.log.Warn(fmt.Sprintf(format, v...))
}

// natsInsecureRoutes begins the warning nats-server gives for a route
// tls.Config with InsecureSkipVerify, which Roost's has only so that it can
// verify the chain without the host name.
const natsInsecureRoutes = "TLS certificate chain and hostname of solicited routes will not be verified"

func (l *natsLogger) Errorf(format string, v ...any) {
	if strings.HasPrefix(format, natsRouteDialError) {
		// Routes to peers are dialled to a bind proxy, which is always
		// up; a failed dial is an implicit route to another node's
		// refuser, failing as it should (see startEngine).
		l.log.Debug(fmt.Sprintf(format, v...))
		return
	}
	l.log.Error(fmt.Sprintf(format, v...))
}

// natsRouteDialError begins nats-server's log line for a route it could
// not dial.
const natsRouteDialError = "Error trying to connect to route"

func (l *natsLogger) Debugf(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *natsLogger) Tracef(format string, v ...any) {}
func (l *natsLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.log.Error(msg)
	l.mu.Lock()
	if l.err == nil {
		l.err = errors.New(msg)
	}
	l.mu.Unlock()
}

func (l *natsLogger) fatal() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}
