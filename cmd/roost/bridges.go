package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/roost-mqtt/roost/bridge"
	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/config"
)

// bridgeSet is the running bridges of roost serve.
type bridgeSet struct {
	list []*bridge.Bridge
	log  *slog.Logger
}

// startBridges starts the bridges cfg names on srv. A bridge whose
// configuration cannot be used (unreadable TLS files, a client id twice)
// stops the server from starting: a bridge that silently is not there
// loses messages. A remote that is down is not an error: the bridge
// connects when it can and queues meanwhile.
func startBridges(ctx context.Context, cfg *config.Config, srv *broker.Server, logger *slog.Logger) (*bridgeSet, error) {
	set := &bridgeSet{log: logger}
	if err := cfg.CheckBridges(); err != nil {
		return nil, err
	}
	for i := range cfg.Bridges {
		if err := set.start(ctx, &cfg.Bridges[i], srv); err != nil {
			set.close(context.WithoutCancel(ctx))
			return nil, fmt.Errorf("bridges[%d]: %w", i, err)
		}
	}
	return set, nil
}

func (s *bridgeSet) start(ctx context.Context, c *config.Bridge, srv *broker.Server) error {
	bc, err := c.Options(s.log)
	if err != nil {
		return err
	}
	b, err := bridge.New(srv, bc)
	if err != nil {
		return err
	}
	if err := b.Start(ctx); err != nil {
		b.Close(context.WithoutCancel(ctx))
		return err
	}
	s.list = append(s.list, b)
	s.log.Info("bridge started", "bridge", b.Name(), "remote", bc.Addresses, "topics", len(bc.Topics))
	return nil
}

// close stops every bridge, waiting at most until ctx ends; what they did
// not forward stays queued in their sessions.
func (s *bridgeSet) close(ctx context.Context) {
	for _, b := range s.list {
		if err := b.Close(ctx); err != nil {
			s.log.Warn("closing bridge", "bridge", b.Name(), "err", err)
		}
	}
}

// stats returns every bridge's figures, for the HTTP server.
func (s *bridgeSet) stats() []bridge.Stats {
	out := make([]bridge.Stats, 0, len(s.list))
	for _, b := range s.list {
		out = append(out, b.Stats())
	}
	return out
}

// setBridges makes the HTTP server (if on) report the bridges.
func (h *httpServer) setBridges(stats func() []bridge.Stats) {
	if h != nil {
		h.bridgeStats = stats
	}
}
