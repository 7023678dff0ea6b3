package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/roost-mqtt/roost/bridge"
	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/config"
)

// startBridges starts the bridges cfg names on srv and returns a function
// that closes them, waiting at most until its context ends. A bridge whose
// configuration cannot be used (unreadable TLS files, a client id twice)
// stops the server from starting: a bridge that silently is not there
// loses messages. A remote that is down is not an error: the bridge
// connects when it can and queues meanwhile.
func startBridges(ctx context.Context, cfg *config.Config, srv *broker.Server, logger *slog.Logger) (func(context.Context), error) {
	if err := cfg.CheckBridges(); err != nil {
		return nil, err
	}
	var started []*bridge.Bridge
	stop := func(ctx context.Context) {
		for _, b := range started {
			if err := b.Close(ctx); err != nil {
				logger.Warn("closing bridge", "bridge", b.Name(), "err", err)
			}
		}
	}
	for i := range cfg.Bridges {
		bc, err := cfg.Bridges[i].Options(logger)
		if err == nil {
			var b *bridge.Bridge
			if b, err = bridge.New(srv, bc); err == nil {
				if err = b.Start(ctx); err == nil {
					started = append(started, b)
					logger.Info("bridge started", "bridge", b.Name(), "remote", bc.Addresses, "topics", len(bc.Topics))
					continue
				}
			}
		}
		stop(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("bridges[%d]: %w", i, err)
	}
	return stop, nil
}
