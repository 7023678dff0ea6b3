package main

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"sync"

	"github.com/roost-mqtt/roost/bridge"
	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/config"
)

// bridgeSet is the running bridges of roost serve.
type bridgeSet struct {
	srv *broker.Server
	log *slog.Logger

	mu   sync.Mutex
	list []runningBridge // in configuration order

	stopWatch func()
}

type runningBridge struct {
	cfg config.Bridge
	b   *bridge.Bridge
}

// startBridges starts the bridges cfg names on srv and, when cfg came from
// a file, reloads them from it on SIGHUP. A bridge whose configuration
// cannot be used (unreadable TLS files, a client id twice) stops the
// server from starting: a bridge that silently is not there loses
// messages. A remote that is down is not an error: the bridge connects
// when it can and queues meanwhile.
func startBridges(ctx context.Context, cfg *config.Config, srv *broker.Server, logger *slog.Logger, hups *hangups) (*bridgeSet, error) {
	s := &bridgeSet{srv: srv, log: logger, stopWatch: func() {}}
	if err := cfg.CheckBridges(); err != nil {
		return nil, err
	}
	for i := range cfg.Bridges {
		rb, err := s.start(ctx, cfg.Bridges[i])
		if err != nil {
			s.close(context.WithoutCancel(ctx))
			return nil, fmt.Errorf("bridges[%d]: %w", i, err)
		}
		s.list = append(s.list, rb)
	}
	if cfg.Path != "" {
		s.watch(ctx, cfg.Path, hups.subscribe())
	}
	return s, nil
}

func (s *bridgeSet) start(ctx context.Context, c config.Bridge) (runningBridge, error) {
	bc, err := c.Options(s.log)
	if err != nil {
		return runningBridge{}, err
	}
	b, err := bridge.New(s.srv, bc)
	if err != nil {
		return runningBridge{}, err
	}
	if err := b.Start(ctx); err != nil {
		b.Close(context.WithoutCancel(ctx))
		return runningBridge{}, err
	}
	s.log.Info("bridge started", "bridge", b.Name(), "remote", bc.Addresses, "topics", len(bc.Topics))
	return runningBridge{cfg: c, b: b}, nil
}

// watch reloads the bridges from path on SIGHUP until close.
func (s *bridgeSet) watch(ctx context.Context, path string, hup <-chan struct{}) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				s.reload(ctx, path)
			}
		}
	}()
	s.stopWatch = func() { cancel(); <-done }
}

// reload applies the bridges of the file at path: a bridge whose entry is
// unchanged keeps running; a changed one restarts (its local session, and
// what is queued there, carries over when its local client id stays, and
// stays for the next try when the new entry does not start); a removed
// one stops and its local session ends, so nothing more queues for it. A
// file that does not load changes nothing.
func (s *bridgeSet) reload(ctx context.Context, path string) {
	cfg, err := config.Load(path)
	if err == nil {
		err = cfg.CheckBridges()
	}
	if err != nil {
		s.log.Error("SIGHUP: bridges not reloaded; keeping the running ones", "err", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := map[string]runningBridge{}
	for _, rb := range s.list {
		old[rb.cfg.Name] = rb
	}
	var next []runningBridge
	for _, c := range cfg.Bridges {
		rb, ok := old[c.Name]
		delete(old, c.Name)
		if ok && reflect.DeepEqual(rb.cfg, c) {
			next = append(next, rb)
			continue
		}
		if ok {
			s.stop(ctx, rb, false) // first: the new one may take over its session
		}
		nb, err := s.start(ctx, c)
		if ok && err == nil && nb.b.LocalClientID() != rb.b.LocalClientID() {
			s.srv.DisconnectClient(rb.b.LocalClientID(), true) // nothing reads that session any more
		}
		if err != nil {
			s.log.Error("SIGHUP: bridge not started", "bridge", c.Name, "err", err)
			continue
		}
		next = append(next, nb)
	}
	for _, rb := range old {
		s.stop(ctx, rb, true)
	}
	s.list = next
	s.log.Info("SIGHUP: bridges reloaded", "bridges", len(next))
}

// stop closes a bridge; with endSession its local session ends too.
func (s *bridgeSet) stop(ctx context.Context, rb runningBridge, endSession bool) {
	if err := rb.b.Close(ctx); err != nil {
		s.log.Warn("closing bridge", "bridge", rb.b.Name(), "err", err)
	}
	if endSession {
		s.srv.DisconnectClient(rb.b.LocalClientID(), true)
	}
	s.log.Info("bridge stopped", "bridge", rb.b.Name(), "session_ended", endSession)
}

// close stops the reloading and every bridge, waiting at most until ctx
// ends; what they did not forward stays queued in their sessions.
func (s *bridgeSet) close(ctx context.Context) {
	s.stopWatch()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rb := range s.list {
		if err := rb.b.Close(ctx); err != nil {
			s.log.Warn("closing bridge", "bridge", rb.b.Name(), "err", err)
		}
	}
}

// stats returns every bridge's figures, for the HTTP server.
func (s *bridgeSet) stats() []bridge.Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]bridge.Stats, 0, len(s.list))
	for _, rb := range s.list {
		out = append(out, rb.b.Stats())
	}
	return out
}

// setBridges makes the HTTP server (if on) report the bridges.
func (h *httpServer) setBridges(stats func() []bridge.Stats) {
	if h != nil {
		h.bridgeStats = stats
	}
}
