package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// hangups is roost serve's one SIGHUP handler. SIGHUP (systemctl reload)
// must never end the process, which is its default action, whatever is
// configured; and each reloader (certificates, auth files, bridges) gets
// every signal through its own channel from subscribe.
type hangups struct {
	mu   sync.Mutex
	subs []chan struct{}
}

// watchHangups handles SIGHUP until the returned stop is called, logging
// each one and passing it on to the subscribers.
func watchHangups(ctx context.Context, logger *slog.Logger) (h *hangups, stop func()) {
	h = new(hangups)
	ctx, cancel := context.WithCancel(ctx)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-sig:
				logger.Info("SIGHUP: reloading the TLS certificates, auth files and bridges that are configured")
				h.broadcast()
			}
		}
	}()
	return h, func() {
		signal.Stop(sig)
		cancel()
		<-done
	}
}

// subscribe returns a channel that receives a value after each SIGHUP; a
// reload still pending absorbs the next signal.
func (h *hangups) subscribe() <-chan struct{} {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	h.subs = append(h.subs, ch)
	h.mu.Unlock()
	return ch
}

func (h *hangups) broadcast() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ch := range h.subs {
		select {
		case ch <- struct{}{}:
		default: // a reload is already pending
		}
	}
}
