package config

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Auth configures authentication and authorization: the auth: section.
// See docs/security.md.
type Auth struct {
	// PasswordFile is a mosquitto_passwd-style file; "" for none.
	PasswordFile string
	// ACLFile is a mosquitto acl_file; "" for none (everything allowed
	// unless HTTPHook says otherwise).
	ACLFile string
	// AllowAnonymous is the default for listeners without anonymous:;
	// nil when not set, and then Anonymous decides (secure by default).
	AllowAnonymous *bool
	// CertIdentityAsUsername uses the identity a listener takes from a
	// client certificate (tls.identity) as the username.
	CertIdentityAsUsername bool
	// HTTPHook is asked when its URL is set.
	HTTPHook HTTPHook
	// CheckRetainSource sends a retained message to a new subscriber
	// only while its publisher may still publish there
	// (broker.Options.CheckRetainSource; mosquitto's check_retain_source).
	CheckRetainSource bool
}

// HTTPHook configures the HTTP authentication and ACL hook.
type HTTPHook struct {
	URL      string
	Timeout  time.Duration // 0: the hook's default (2s)
	CacheTTL time.Duration // 0: the hook's default (30s); "off": no cache
	NoCache  bool
	FailOpen bool
	// MaxConcurrent bounds the requests out at a time, per kind (receive
	// questions, and the others); 0: the hook's default (64).
	MaxConcurrent int
}

// maxHookConcurrent is the largest http_hook.max_concurrent: each request
// out may hold a connection to the service (and a file descriptor) open,
// twice over (receive questions have their own allowance).
const maxHookConcurrent = 4096

// Enabled reports whether anything in a checks clients: with nothing, the
// broker needs no Authenticator or Authorizer at all.
func (a *Auth) Enabled() bool {
	return a.PasswordFile != "" || a.ACLFile != "" || a.HTTPHook.URL != "" || a.CertIdentityAsUsername
}

// Authenticates reports whether something in a can tell who a client is:
// a password file, an HTTP hook or client certificates as identities. (An
// ACL file alone cannot: it only says what a known name may do.)
func (a *Auth) Authenticates() bool {
	return a.PasswordFile != "" || a.HTTPHook.URL != "" || a.CertIdentityAsUsername
}

// AnonymousMode is whether a listener accepts clients without a username.
type AnonymousMode uint8

// The anonymous modes.
const (
	AnonymousRefused  AnonymousMode = iota // CONNACK 0x87 Not authorized
	AnonymousLocal                         // only from a loopback address; others refused
	AnonymousAccepted                      // from anywhere
)

func (m AnonymousMode) String() string {
	switch m {
	case AnonymousRefused:
		return "no"
	case AnonymousLocal:
		return "from this machine only"
	}
	return "yes"
}

// Anonymous decides whether ln accepts clients without a username, and says
// why (for the start-up log). The first rule that applies decides:
//
//  1. the listener's own anonymous: setting;
//  2. auth.allow_anonymous (or --allow-anonymous), when set;
//  3. with a way to authenticate clients (Authenticates), refused: someone
//     who configured passwords believes they are required, however the
//     listeners were given;
//  4. with none, accepted from loopback addresses only, on every listener:
//     on a loopback listener that is every client (unless a PROXY-protocol
//     or WebSocket proxy on this machine relays others, whose own address
//     then counts), and a broker listening on all interfaces, the default,
//     is not open to the network by accident.
//
// docs/security.md has the same rules as a table.
func (c *Config) Anonymous(ln Listener) (AnonymousMode, string) {
	a := &c.Auth
	switch {
	case ln.Anonymous != nil:
		return onOff(*ln.Anonymous), fmt.Sprintf("the listener's anonymous: %t", *ln.Anonymous)
	case a.AllowAnonymous != nil:
		return onOff(*a.AllowAnonymous), fmt.Sprintf("auth.allow_anonymous (or --allow-anonymous) is %t", *a.AllowAnonymous)
	case ln.Auth != nil && c.Authenticates(ln):
		return AnonymousRefused, "clients can authenticate (the listener's auth.password_file) and its anonymous: is not set"
	case ln.Auth != nil:
		return AnonymousRefused, "the listener has its own auth: and no anonymous: true (mosquitto's per_listener_settings: allow_anonymous is false unless set for the listener)"
	case a.Authenticates():
		return AnonymousRefused, "clients can authenticate (" + a.authMeans() + ") and auth.allow_anonymous is not set; set it to true (or --allow-anonymous) to accept anonymous clients as well"
	}
	why := "nothing authenticates clients (no auth.password_file, http_hook or cert_identity_as_username) and auth.allow_anonymous is not set"
	switch {
	case ln.Loopback() && (ln.ProxyProtocol || len(ln.WS.TrustedProxies) > 0):
		return AnonymousLocal, why + "; the listener is on loopback, and clients relayed by a proxy are judged by the address it passes on"
	case ln.Loopback():
		return AnonymousLocal, why + "; the listener is on loopback: every client connecting directly is local, and so is every client a proxy on this machine relays to it (set proxy_protocol or ws.trusted_proxies to judge those by their own address)"
	}
	return AnonymousLocal, why + ": clients from other machines are refused; set auth.password_file, or auth.allow_anonymous: true (--allow-anonymous) to accept anyone"
}

// Authenticates reports whether something can tell who a client of ln
// is: its own password file when it has its own auth:, else what
// Auth.Authenticates says; an HTTP hook and certificate identities count
// for every listener.
func (c *Config) Authenticates(ln Listener) bool {
	if ln.Auth == nil {
		return c.Auth.Authenticates()
	}
	return ln.Auth.PasswordFile != "" || c.Auth.HTTPHook.URL != "" || c.Auth.CertIdentityAsUsername
}

// PerListenerAuth reports whether some listener has its own auth:.
func (c *Config) PerListenerAuth() bool {
	for _, ln := range c.Listeners {
		if ln.Auth != nil {
			return true
		}
	}
	return false
}

func onOff(b bool) AnonymousMode {
	if b {
		return AnonymousAccepted
	}
	return AnonymousRefused
}

// authMeans names what authenticates clients, for log lines.
func (a *Auth) authMeans() string {
	var ms []string
	if a.PasswordFile != "" {
		ms = append(ms, "auth.password_file")
	}
	if a.HTTPHook.URL != "" {
		ms = append(ms, "auth.http_hook")
	}
	if a.CertIdentityAsUsername {
		ms = append(ms, "auth.cert_identity_as_username")
	}
	return strings.Join(ms, ", ")
}

func (d *decoder) auth(n *yaml.Node, path string, a *Auth) {
	d.mapping(n, path, map[string]field{
		"password_file": d.str(&a.PasswordFile),
		"acl_file":      d.str(&a.ACLFile),
		"allow_anonymous": func(p string, v *yaml.Node) {
			var b bool
			d.boolean(v, p, &b)
			a.AllowAnonymous = &b
		},
		"cert_identity_as_username": func(p string, v *yaml.Node) { d.boolean(v, p, &a.CertIdentityAsUsername) },
		"check_retain_source":       func(p string, v *yaml.Node) { d.boolean(v, p, &a.CheckRetainSource) },
		"http_hook":                 func(p string, v *yaml.Node) { d.httpHook(v, p, &a.HTTPHook) },
	})
}

func (d *decoder) httpHook(n *yaml.Node, path string, h *HTTPHook) {
	d.mapping(n, path, map[string]field{
		"url": func(p string, v *yaml.Node) {
			var s string
			d.str(&s)(p, v)
			if s != "" && !strings.HasPrefix(s, "http://") && !strings.HasPrefix(s, "https://") {
				d.errorf(v, "%s: must be an http:// or https:// URL, got %s", p, describe(v))
				return
			}
			h.URL = s
		},
		"timeout": func(p string, v *yaml.Node) { d.duration(v, p, 1, &h.Timeout) },
		"cache_ttl": func(p string, v *yaml.Node) {
			if v.Kind == yaml.ScalarNode && v.Value == "off" {
				h.NoCache = true
				return
			}
			d.duration(v, p, 1, &h.CacheTTL)
		},
		"fail_open": func(p string, v *yaml.Node) { d.boolean(v, p, &h.FailOpen) },
		"max_concurrent": func(p string, v *yaml.Node) {
			if n, ok := d.integer(v, p, 1, maxHookConcurrent); ok {
				h.MaxConcurrent = int(n)
			}
		},
	})
	if !isNull(n) && n.Kind == yaml.MappingNode && !hasKey(n, "url") {
		d.errorf(n, "%s: missing key \"url\"", path)
	}
}

// resolvePaths makes relative file names relative to dir, the config
// file's directory.
func (a *Auth) resolvePaths(dir string) {
	for _, p := range []*string{&a.PasswordFile, &a.ACLFile} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
}

func (a *ListenerAuth) resolvePaths(dir string) {
	for _, p := range []*string{&a.PasswordFile, &a.ACLFile} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
}
