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
		if mode, _ := cfg.Anonymous(ln); mode == config.AnonymousRefused && !cfg.Authenticates(ln) {
			if ln.Auth != nil {
				return fmt.Errorf("listen %s: anonymous access is off but nothing can authenticate its clients: set the listener's auth.password_file (mosquitto: password_file after its listener line, as per_listener_settings true wants), or anonymous: true (allow_anonymous true)", ln.URL)
			}
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
	if !a.Enabled() && !restricted && !cfg.PerListenerAuth() {
		return func() {}, nil
	}

	files := &authFiles{certAsUser: a.CertIdentityAsUsername, logger: logger}
	var acl *auth.ACL
	if authn.Passwords, err = files.passwords(a.PasswordFile); err != nil {
		return nil, err
	}
	if acl, err = files.acl(a.ACLFile); err != nil {
		return nil, err
	}
	var hook *auth.HTTPHook
	if h := a.HTTPHook; h.URL != "" {
		ttl := h.CacheTTL
		if h.NoCache {
			ttl = -1
		}
		hook = auth.NewHTTPHook(auth.HTTPHookOptions{URL: h.URL, Timeout: h.Timeout, CacheTTL: ttl, FailOpen: h.FailOpen,
			MaxConcurrent: h.MaxConcurrent, CertIdentityAsUsername: a.CertIdentityAsUsername, Logger: logger.With("component", "auth hook")})
		authn.Hook = hook
	}
	opts.Authenticator = authn
	opts.Authorizer = authorizer(acl, hook)
	if cfg.PerListenerAuth() {
		if err := perListenerAuth(cfg, authn, hook, files, opts); err != nil {
			return nil, err
		}
	}
	return watchAuth(ctx, files.reloaders, logger, hups.subscribe()), nil
}

// authorizer combines what decides topics; nil (every topic allowed) for
// neither.
func authorizer(acl *auth.ACL, hook *auth.HTTPHook) broker.Authorizer {
	switch {
	case acl != nil && hook != nil:
		return auth.All(acl, hook)
	case acl != nil:
		return acl
	case hook != nil:
		return hook
	}
	return nil
}

// perListenerAuth gives the listeners with their own auth: (mosquitto's
// per_listener_settings true) their own password and ACL files; the
// others keep the top-level ones. The anonymous rules and the HTTP hook
// stay shared: they are per listener already, or for every listener.
func perListenerAuth(cfg *config.Config, base *auth.Authenticator, hook *auth.HTTPHook, files *authFiles, opts *broker.Options) error {
	bl := &auth.ByListener{Default: opts.Authenticator, DefaultAuthorizer: opts.Authorizer,
		Authenticators: make(map[string]broker.Authenticator), Authorizers: make(map[string]broker.Authorizer)}
	for _, ln := range cfg.Listeners {
		if ln.Auth == nil {
			continue
		}
		la := *base // shares the anonymous rules and the hook
		var err error
		if la.Passwords, err = files.passwords(ln.Auth.PasswordFile); err != nil {
			return err
		}
		acl, err := files.acl(ln.Auth.ACLFile)
		if err != nil {
			return err
		}
		bl.Authenticators[ln.ID()] = &la
		// nil: every topic, whatever the top level's acl_file says.
		bl.Authorizers[ln.ID()] = authorizer(acl, hook)
	}
	opts.Authenticator, opts.Authorizer = bl, bl
	return nil
}

// authFiles loads password and ACL files once each, however many
// listeners name them, and collects them for reloading.
type authFiles struct {
	certAsUser bool
	logger     *slog.Logger
	pw         map[string]*auth.PasswordFile
	acls       map[string]*auth.ACL
	reloaders  []auth.Reloader
}

// passwords loads the password file at path; nil for "".
func (f *authFiles) passwords(path string) (*auth.PasswordFile, error) {
	if path == "" {
		return nil, nil
	}
	if p, ok := f.pw[path]; ok {
		return p, nil
	}
	p, err := auth.LoadPasswordFile(path)
	if err != nil {
		return nil, err
	}
	if f.pw == nil {
		f.pw = make(map[string]*auth.PasswordFile)
	}
	f.pw[path] = p
	f.reloaders = append(f.reloaders, p)
	f.logger.Info("password file loaded", "file", path, "users", p.Len())
	return p, nil
}

// acl loads the ACL file at path; nil for "".
func (f *authFiles) acl(path string) (*auth.ACL, error) {
	if path == "" {
		return nil, nil
	}
	if a, ok := f.acls[path]; ok {
		return a, nil
	}
	a, err := auth.LoadACLFile(path)
	if err != nil {
		return nil, err
	}
	a.CertIdentityAsUsername = f.certAsUser
	if f.acls == nil {
		f.acls = make(map[string]*auth.ACL)
	}
	f.acls[path] = a
	f.reloaders = append(f.reloaders, a)
	f.logger.Info("acl file loaded", "file", path)
	return a, nil
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
		if mode == config.AnonymousAccepted && !cfg.Authenticates(ln) && !ln.Loopback() {
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
