package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/roost-mqtt/roost/internal/config"
	"github.com/roost-mqtt/roost/listener"
)

// certPollInterval is how often certificate files are checked for changes.
const certPollInterval = 5 * time.Second

// checkListeners reports the first listener this build cannot serve as
// configured.
func checkListeners(lns []config.Listener) error {
	for _, ln := range lns {
		if err := ln.Check(); err != nil {
			return fmt.Errorf("listen %s: %w", ln.URL, err)
		}
	}
	return nil
}

// openListeners opens every listener, or none: on error it closes those
// opened. It also returns the certificate managers of the TLS listeners.
func openListeners(cfgs []config.Listener, maxPacket uint32, logger *slog.Logger) ([]net.Listener, []*listener.CertManager, error) {
	var lns []net.Listener
	var certs []*listener.CertManager
	for _, c := range cfgs {
		ln, cm, err := openListener(c, maxPacket, logger.With("listener", c.URL))
		if err != nil {
			closeAll(lns)
			return nil, nil, fmt.Errorf("listen %s: %w", c.URL, err)
		}
		lns = append(lns, ln)
		if cm != nil {
			certs = append(certs, cm)
		}
	}
	return lns, certs, nil
}

// openListener builds one listener from the inside out: TCP, the
// connection limit, PROXY protocol, then TLS or WebSocket.
func openListener(c config.Listener, maxPacket uint32, log *slog.Logger) (net.Listener, *listener.CertManager, error) {
	var cm *listener.CertManager
	if c.IsTLS() {
		var err error
		if cm, err = listener.NewCertManager(tlsOptions(c)); err != nil {
			return nil, nil, err
		}
	}
	tcp, err := listenTCP(c.Addr, c.Interface)
	if err != nil {
		return nil, nil, err
	}
	ln := listener.Limit(tcp, c.MaxConnections, log.Warn)
	if c.ProxyProtocol {
		ln = listener.Proxy(ln, listener.ProxyOptions{HeaderTimeout: c.HandshakeTimeout, Logf: log.Warn})
	}
	switch c.Scheme {
	case "mqtts":
		ln = listener.TLSWith(ln, cm, listener.TLSListenOptions{HandshakeTimeout: c.HandshakeTimeout, Logf: log.Info})
	case "ws", "wss":
		ln = listener.WebSocket(ln, listener.WSOptions{
			Paths:            c.Paths(),
			AnyPath:          c.WS.AnyPath,
			AllowedOrigins:   c.WS.AllowedOrigins,
			TrustedProxies:   c.WS.TrustedProxies,
			FileDir:          c.WS.HTTPDir,
			MaxMessageSize:   listener.WSMessageLimit(maxPacket),
			TLS:              cm,
			Identity:         identity(c.TLS.Identity),
			HandshakeTimeout: c.HandshakeTimeout,
			Logger:           log,
		})
	}
	return listener.Named(ln, c.ID()), cm, nil
}

func tlsOptions(c config.Listener) listener.TLSOptions {
	o := listener.TLSOptions{
		ClientCA:          c.TLS.ClientCA,
		ClientCAPath:      c.TLS.ClientCAPath,
		CRLFile:           c.TLS.CRLFile,
		RequireClientCert: c.TLS.RequireClientCert,
		Identity:          identity(c.TLS.Identity),
		MinVersion:        tls.VersionTLS12,
	}
	switch c.TLS.MinVersion {
	case "1.1":
		o.MinVersion = tls.VersionTLS11
	case "1.3":
		o.MinVersion = tls.VersionTLS13
	}
	for _, name := range c.TLS.CipherSuites {
		// Checked when the file was read.
		if id, err := config.CipherSuiteID(name); err == nil {
			o.CipherSuites = append(o.CipherSuites, id)
		}
	}
	for _, kp := range c.TLS.Certs {
		o.Certs = append(o.Certs, listener.KeyPair{Cert: kp.Cert, Key: kp.Key})
	}
	if c.Scheme == "wss" {
		o.NextProtos = []string{"http/1.1"} // WebSocket needs HTTP/1.1
	}
	return o
}

func identity(s string) listener.Identity {
	switch s {
	case "cn":
		return listener.IdentityCN
	case "san":
		return listener.IdentitySAN
	case "subject":
		return listener.IdentitySubject
	}
	return listener.IdentityNone
}

// watchCerts reloads the certificates on SIGHUP and when their files
// change, until the returned stop is called. Existing connections keep the
// certificates they were made with.
func watchCerts(ctx context.Context, certs []*listener.CertManager, logger *slog.Logger, hup <-chan struct{}) (stop func()) {
	if len(certs) == 0 {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	triggers := make([]chan struct{}, len(certs))
	done := make(chan struct{}, len(certs))
	for i, cm := range certs {
		triggers[i] = make(chan struct{}, 1)
		go func() {
			defer func() { done <- struct{}{} }()
			cm.Watch(ctx, certPollInterval, triggers[i], func(err error) {
				if err != nil {
					logger.Error("certificate reload failed; keeping the previous certificates", "err", err)
				} else {
					logger.Info("certificates reloaded")
				}
			})
		}()
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				for _, t := range triggers {
					select {
					case t <- struct{}{}:
					default: // a reload is already pending
					}
				}
			}
		}
	}()
	return func() {
		cancel()
		for range certs {
			<-done
		}
	}
}
