package bridge

import (
	"cmp"
	"context"
	"net"
	"net/url"
	"time"
)

// watchPrimary, when the bridge is connected to an address other than the
// first and Config.RoundRobin is off, checks every PrimaryRetry whether
// the first address accepts a TCP connection, and when it does reconnects
// (client.Client.Reconnect), which starts from the first address: the
// main connection comes back, as with mosquitto's round_robin false.
func (b *Bridge) watchPrimary(server string) {
	b.stopPrimaryWatch()
	if b.cfg.RoundRobin || len(b.cfg.Addresses) < 2 || server == b.cfg.Addresses[0] {
		return
	}
	u, err := url.Parse(b.cfg.Addresses[0])
	if err != nil {
		return
	}
	host := u.Host
	if u.Port() == "" {
		port := map[string]string{"mqtts": "8883", "ssl": "8883", "tls": "8883", "ws": "80", "wss": "443"}[u.Scheme]
		host = net.JoinHostPort(u.Hostname(), cmp.Or(port, "1883"))
	}
	stop := make(chan struct{})
	b.primaryMu.Lock()
	b.primaryStop = stop
	b.primaryMu.Unlock()
	dial := b.cfg.dialer()
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	b.spawn(func() {
		t := time.NewTicker(b.cfg.PrimaryRetry)
		defer t.Stop()
		for {
			select {
			case <-t.C:
			case <-stop:
				return
			case <-b.ctx.Done():
				return
			}
			ctx, cancel := context.WithTimeout(b.ctx, b.cfg.PrimaryRetry)
			nc, err := dial(ctx, "tcp", host)
			cancel()
			if err != nil {
				continue
			}
			nc.Close()
			b.log.Info("the first address is back; reconnecting to it (round_robin false)", "address", b.cfg.Addresses[0], "from", server)
			b.remote.Reconnect()
			return
		}
	})
}

func (b *Bridge) stopPrimaryWatch() {
	b.primaryMu.Lock()
	defer b.primaryMu.Unlock()
	if b.primaryStop != nil {
		close(b.primaryStop)
		b.primaryStop = nil
	}
}
