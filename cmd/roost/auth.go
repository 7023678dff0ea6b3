package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/roost-mqtt/roost/auth"
	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/config"
)

// authPollInterval is how often the password and ACL files are checked
// for changes.
var authPollInterval = 2 * time.Second

// checkAuth reports auth settings that cannot work: two listeners with one
// name, or a listener closed to anonymous clients when nothing could
// authenticate anyone else.
func checkAuth(cfg *config.Config) error {
	seen := make(map[string]bool)
	for _, ln := range cfg.Listeners {
		if seen[ln.ID()] {
			return fmt.Errorf("listen %s: listener name %q is used twice", ln.URL, ln.ID())
		}
		seen[ln.ID()] = true
		if mode, _ := cfg.Anonymous(ln); mode == config.AnonymousRefused && !cfg.Auth.Authenticates() {
			return fmt.Errorf("listen %s: anonymous access is off but nothing can authenticate clients: set auth.password_file, auth.http_hook or auth.cert_identity_as_username", ln.URL)
		}
	}
	return nil
}

// setupAuth loads what cfg.Auth names into opts.Authenticator and
// opts.Authorizer and reloads the files on SIGHUP and when they change,
// until stop is called. It logs, per listener, whether anonymous clients
// are accepted and why (config.Config.Anonymous). With nothing configured
// and anonymous clients accepted from anywhere, it leaves opts alone: no
// checks at all.
func setupAuth(ctx context.Context, cfg *config.Config, opts *broker.Options, logger *slog.Logger, hups *hangups) (stop func(), err error) {
	a := cfg.Auth
	authn := &auth.Authenticator{CertIdentityAsUsername: a.CertIdentityAsUsername}
	restricted := anonymousAccess(ctx, cfg, authn, logger)
	if !a.Enabled() && !restricted {
		return func() {}, nil
	}

	var reloaders []auth.Reloader
	var acl *auth.ACL
	if a.PasswordFile != "" {
		if authn.Passwords, err = auth.LoadPasswordFile(a.PasswordFile); err != nil {
			return nil, err
		}
		reloaders = append(reloaders, authn.Passwords)
		logger.Info("password file loaded", "file", a.PasswordFile, "users", authn.Passwords.Len())
	}
	if a.ACLFile != "" {
		if acl, err = auth.LoadACLFile(a.ACLFile); err != nil {
			return nil, err
		}
		acl.CertIdentityAsUsername = a.CertIdentityAsUsername
		reloaders = append(reloaders, acl)
		logger.Info("acl file loaded", "file", a.ACLFile)
	}
	var hook *auth.HTTPHook
	if h := a.HTTPHook; h.URL != "" {
		ttl := h.CacheTTL
		if h.NoCache {
			ttl = -1
		}
		hook = auth.NewHTTPHook(auth.HTTPHookOptions{URL: h.URL, Timeout: h.Timeout, CacheTTL: ttl, FailOpen: h.FailOpen,
			CertIdentityAsUsername: a.CertIdentityAsUsername, Logger: logger.With("component", "auth hook")})
		authn.Hook = hook
	}
	opts.Authenticator = authn
	switch {
	case acl != nil && hook != nil:
		opts.Authorizer = auth.All(acl, hook)
	case acl != nil:
		opts.Authorizer = acl
	case hook != nil:
		opts.Authorizer = hook
	}
	return watchAuth(ctx, reloaders, logger, hups.subscribe()), nil
}

// anonymousAccess sets authn's anonymous access per listener as
// cfg.Anonymous decides, logging each decision, and reports whether any
// listener restricts anonymous clients.
func anonymousAccess(ctx context.Context, cfg *config.Config, authn *auth.Authenticator, logger *slog.Logger) (restricted bool) {
	authn.Listeners, authn.LoopbackOnly = make(map[string]bool), make(map[string]bool)
	// Connections that do not say which listener they came through get
	// the strictest listener's setting.
	authn.Listeners[""] = true
	for _, ln := range cfg.Listeners {
		mode, why := cfg.Anonymous(ln)
		level := slog.LevelInfo
		if mode == config.AnonymousAccepted && !cfg.Auth.Authenticates() && !ln.Loopback() {
			level = slog.LevelWarn // anyone who can reach it may use it
		}
		logger.Log(ctx, level, "anonymous clients", "listener", ln.ID(), "accepted", mode.String(), "why", why)
		on, local := mode != config.AnonymousRefused, mode == config.AnonymousLocal
		authn.Listeners[ln.ID()] = on
		authn.LoopbackOnly[ln.ID()] = local
		authn.Listeners[""] = authn.Listeners[""] && on
		authn.LoopbackOnly[""] = authn.LoopbackOnly[""] || local
		restricted = restricted || mode != config.AnonymousAccepted
	}
	return restricted
}

// watchAuth reloads the files on SIGHUP and when they change. A file that
// fails to parse keeps the rules already loaded.
func watchAuth(ctx context.Context, rs []auth.Reloader, logger *slog.Logger, hup <-chan struct{}) (stop func()) {
	if len(rs) == 0 {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	trigger := make(chan struct{}, 1)
	w := auth.NewWatcher(rs...)
	done := make(chan struct{}, 2)
	go func() {
		defer func() { done <- struct{}{} }()
		w.Run(ctx, authPollInterval, trigger, func(path string, err error) {
			if err != nil {
				logger.Error("auth file reload failed; keeping the previous rules", "file", path, "err", err)
				return
			}
			logger.Info("auth file reloaded", "file", path)
		})
	}()
	go func() {
		defer func() { done <- struct{}{} }()
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				select {
				case trigger <- struct{}{}:
				default: // a reload is already pending
				}
			}
		}
	}()
	return func() {
		cancel()
		<-done
		<-done
	}
}
