package config

import (
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
	// AllowAnonymous is the default for listeners without anonymous:.
	// Default true.
	AllowAnonymous bool
	// CertIdentityAsUsername uses the identity a listener takes from a
	// client certificate (tls.identity) as the username.
	CertIdentityAsUsername bool
	// HTTPHook is asked when its URL is set.
	HTTPHook HTTPHook
}

// HTTPHook configures the HTTP authentication and ACL hook.
type HTTPHook struct {
	URL      string
	Timeout  time.Duration // 0: the hook's default (2s)
	CacheTTL time.Duration // 0: the hook's default (30s); "off": no cache
	NoCache  bool
	FailOpen bool
}

// Enabled reports whether anything in a checks clients: with nothing, the
// broker needs no Authenticator or Authorizer at all.
func (a *Auth) Enabled() bool {
	return a.PasswordFile != "" || a.ACLFile != "" || a.HTTPHook.URL != "" || a.CertIdentityAsUsername
}

func (d *decoder) auth(n *yaml.Node, path string, a *Auth) {
	d.mapping(n, path, map[string]field{
		"password_file":             d.str(&a.PasswordFile),
		"acl_file":                  d.str(&a.ACLFile),
		"allow_anonymous":           func(p string, v *yaml.Node) { d.boolean(v, p, &a.AllowAnonymous) },
		"cert_identity_as_username": func(p string, v *yaml.Node) { d.boolean(v, p, &a.CertIdentityAsUsername) },
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
