package config

import (
	"errors"
	"fmt"
	"net"

	"go.yaml.in/yaml/v3"
)

// HTTP configures the HTTP server for metrics, health checks, the admin
// API and the web console: the http: section. It is off unless Addr is
// set. See docs/observability.md.
type HTTP struct {
	// Addr is HOST:PORT to listen on; "" turns the server off.
	Addr string
	// Token is accepted as a Bearer token or as the password of Basic
	// authentication.
	Token string
	// UsersFromPasswordFile lets the users of auth.password_file log in
	// with Basic authentication.
	UsersFromPasswordFile bool
	// MetricsPublic serves /metrics without credentials.
	MetricsPublic bool
}

// Enabled reports whether the HTTP server is on.
func (h *HTTP) Enabled() bool { return h.Addr != "" }

// Check reports an HTTP setting that cannot work or would be unsafe: an
// address other than loopback with no credential configured (anyone who
// can reach it could disconnect clients and publish), or users from a
// password file that a names none of.
func (h *HTTP) Check(a *Auth) error {
	if !h.Enabled() {
		return nil
	}
	host, _, err := net.SplitHostPort(h.Addr)
	if err != nil {
		return fmt.Errorf("http %s: want HOST:PORT: %w", h.Addr, err)
	}
	if h.UsersFromPasswordFile && a.PasswordFile == "" {
		return errors.New("http: users_from_password_file needs auth.password_file")
	}
	if h.Token == "" && !h.UsersFromPasswordFile && !isLoopbackHost(host) {
		return fmt.Errorf("http %s: an address other than loopback needs http.token (--http-token) or http.users_from_password_file", h.Addr)
	}
	return nil
}

func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (d *decoder) http(n *yaml.Node, path string, h *HTTP) {
	d.mapping(n, path, map[string]field{
		"addr": func(p string, v *yaml.Node) {
			var s string
			d.str(&s)(p, v)
			if _, _, err := net.SplitHostPort(s); s != "" && err != nil {
				d.errorf(v, "%s: want HOST:PORT such as 127.0.0.1:8080, got %q", p, s)
				return
			}
			h.Addr = s
		},
		"token":                    d.str(&h.Token),
		"users_from_password_file": func(p string, v *yaml.Node) { d.boolean(v, p, &h.UsersFromPasswordFile) },
		"metrics_public":           func(p string, v *yaml.Node) { d.boolean(v, p, &h.MetricsPublic) },
	})
}
