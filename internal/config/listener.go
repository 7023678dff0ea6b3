package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Listener is one address to accept clients on, written as a URL:
// mqtt://HOST:PORT (plain TCP), mqtts://HOST:PORT (TLS), ws://HOST:PORT/PATH
// and wss://HOST:PORT/PATH (WebSocket), with the options of its config
// file entry.
type Listener struct {
	URL    string // as written
	Scheme string // "mqtt", "mqtts", "ws" or "wss"
	Addr   string // HOST:PORT for net.Listen; HOST may be empty (all interfaces)
	Path   string // HTTP path for ws/wss ("/mqtt" when absent); empty otherwise
	ListenerOptions
}

// ListenerOptions are a listener's settings besides its URL; see
// docs/config.md for each.
type ListenerOptions struct {
	// Name identifies the listener to authentication (per-listener
	// anonymous access) and in logs. Default: the URL.
	Name string
	// Anonymous allows clients without a username; nil means
	// auth.allow_anonymous decides.
	Anonymous *bool
	// ProxyProtocol expects a PROXY protocol v1 or v2 header on every
	// TCP connection.
	ProxyProtocol bool
	// MaxConnections caps this listener's open connections; 0: no cap
	// beyond the broker's limits.max_connections.
	MaxConnections int
	// HandshakeTimeout bounds the PROXY header, TLS handshake and
	// WebSocket upgrade. Default 10s.
	HandshakeTimeout time.Duration
	TLS              TLS // mqtts and wss only
	WS               WS  // ws and wss only
	// MountPoint is put before the topics of this listener's clients
	// and taken off those delivered to them (broker.ListenerPolicy).
	MountPoint string
	// ClientIDs, when set, replaces the top-level client_ids for this
	// listener's clients.
	ClientIDs *ClientIDs
	// TopicAliasMaximum, when set, replaces limits.topic_alias_maximum
	// for this listener's clients; 0 allows them no topic aliases.
	TopicAliasMaximum *int
	// Interface, when set, is the only network interface the listener
	// takes connections through (Linux SO_BINDTODEVICE; mosquitto's
	// bind_interface).
	Interface string
	// UsernameAsClientID makes each client's username its client id
	// (broker.ListenerPolicy.UsernameAsClientID).
	UsernameAsClientID bool
	// MaxQoS, when set (0, 1 or 2), is the highest QoS this listener's
	// clients may use (broker.ListenerPolicy.MaxQoS).
	MaxQoS *int
	// Auth, when set, authenticates and authorizes this listener's
	// clients instead of the top-level auth: files (mosquitto's
	// per_listener_settings true).
	Auth *ListenerAuth
}

// ListenerAuth are a listener's own password and ACL files.
type ListenerAuth struct {
	PasswordFile string // "" for none
	ACLFile      string // "" for none: every topic allowed
}

// TLS configures an mqtts or wss listener.
type TLS struct {
	// Certs are certificate chain and key files; with several, the one
	// whose names match the client's SNI is served, else the first.
	Certs             []KeyPair
	ClientCA          string // PEM CAs to verify client certificates with
	ClientCAPath      string // a directory of more such CAs (mosquitto's capath)
	CRLFile           string // revocation lists for client certificates (mosquitto's crlfile)
	RequireClientCert bool
	Identity          string // "", "cn", "san" or "subject": the client certificate's name to use
	MinVersion        string // "1.1", "1.2" (default) or "1.3"
	// CipherSuites are the IANA names of the TLS 1.2 suites offered
	// (CipherSuiteID); empty: Go's defaults.
	CipherSuites []string
}

// KeyPair names a PEM certificate chain file and its key file.
type KeyPair struct {
	Cert, Key string
}

// WS configures a ws or wss listener.
type WS struct {
	Paths          []string // served besides Listener.Path
	AnyPath        bool
	AllowedOrigins []string // empty: any origin
	TrustedProxies []netip.Prefix
	HTTPDir        string // files for plain HTTP requests (mosquitto's http_dir); "" for none
}

// DefaultListenerOptions are the options of a listener given by URL only.
func DefaultListenerOptions() ListenerOptions {
	return ListenerOptions{HandshakeTimeout: 10 * time.Second}
}

// Paths are every HTTP path a ws or wss listener serves, Path first.
func (ln *Listener) Paths() []string {
	ps := []string{ln.Path}
	for _, p := range ln.WS.Paths {
		if !slices.Contains(ps, p) {
			ps = append(ps, p)
		}
	}
	return ps
}

// ID is the listener's name, or its URL when it has none.
func (ln *Listener) ID() string {
	if ln.Name != "" {
		return ln.Name
	}
	return ln.URL
}

// Loopback reports whether the listener accepts connections from this
// machine only: its host is a loopback address or "localhost".
func (ln *Listener) Loopback() bool {
	host, _, err := net.SplitHostPort(ln.Addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// IsTLS reports whether the scheme is mqtts or wss.
func (ln *Listener) IsTLS() bool { return ln.Scheme == "mqtts" || ln.Scheme == "wss" }

// IsWebSocket reports whether the scheme is ws or wss.
func (ln *Listener) IsWebSocket() bool { return ln.Scheme == "ws" || ln.Scheme == "wss" }

// Check reports settings that do not fit together: TLS files on a plain
// listener, WebSocket settings on a TCP one, a TLS listener without a
// certificate, client-certificate options without a client_ca.
func (ln *Listener) Check() error {
	t := ln.TLS
	hasTLS := len(t.Certs) > 0 || t.ClientCA != "" || t.ClientCAPath != "" || t.CRLFile != "" || t.RequireClientCert || t.Identity != "" || t.MinVersion != "" || len(t.CipherSuites) > 0
	w := ln.WS
	hasWS := len(w.Paths) > 0 || w.AnyPath || len(w.AllowedOrigins) > 0 || len(w.TrustedProxies) > 0 || w.HTTPDir != ""
	switch {
	case hasTLS && !ln.IsTLS():
		return fmt.Errorf("tls settings need an mqtts:// or wss:// url, not %s://", ln.Scheme)
	case hasWS && !ln.IsWebSocket():
		return fmt.Errorf("ws settings need a ws:// or wss:// url, not %s://", ln.Scheme)
	case ln.IsTLS() && len(t.Certs) == 0:
		return fmt.Errorf("%s:// needs a certificate: set tls.cert and tls.key (or --tls-cert and --tls-key)", ln.Scheme)
	case (t.RequireClientCert || t.Identity != "" || t.CRLFile != "") && t.ClientCA == "" && t.ClientCAPath == "":
		return errors.New("tls.require_client_cert, tls.identity and tls.crl_file need tls.client_ca or tls.client_ca_path to verify client certificates with")
	}
	return nil
}

// schemes lists the listener URL schemes the config accepts.
var schemes = []string{"mqtt", "mqtts", "ws", "wss"}

// ParseListener parses a listener URL such as mqtt://0.0.0.0:1883. The port
// is required (0 picks a free one); errors say what is wrong with raw.
func ParseListener(raw string) (Listener, error) {
	if !strings.Contains(raw, "://") {
		return Listener{}, fmt.Errorf("%q is not a URL: want SCHEME://HOST:PORT, e.g. mqtt://0.0.0.0:1883", raw)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return Listener{}, fmt.Errorf("bad URL %q: %w", raw, err)
	}
	ln := Listener{URL: raw, Scheme: strings.ToLower(u.Scheme), ListenerOptions: DefaultListenerOptions()}
	if !slices.Contains(schemes, ln.Scheme) {
		return Listener{}, fmt.Errorf("unsupported scheme %q (want %s)", u.Scheme, strings.Join(schemes, ", "))
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return Listener{}, fmt.Errorf("%q: only SCHEME://HOST:PORT[/PATH] is allowed", raw)
	}
	port := u.Port()
	if port == "" {
		return Listener{}, fmt.Errorf("%q: missing port, e.g. %s://%s:1883", raw, ln.Scheme, u.Hostname())
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n > 65535 {
		return Listener{}, fmt.Errorf("%q: port %q is not a number from 0 to 65535", raw, port)
	}
	ln.Addr = net.JoinHostPort(u.Hostname(), port)
	return ln, ln.setPath(u.Path)
}

func (ln *Listener) setPath(p string) error {
	switch ln.Scheme {
	case "ws", "wss":
		ln.Path = p
		if p == "" || p == "/" {
			ln.Path = "/mqtt" // what mqtt.js and most WebSocket clients use
		}
	default:
		if p != "" && p != "/" {
			return fmt.Errorf("%q: a path is only allowed for ws and wss", ln.URL)
		}
	}
	return nil
}

// LogFormat is the log output format.
type LogFormat string

// The log formats.
const (
	LogText LogFormat = "text" // logfmt-style key=value lines
	LogJSON LogFormat = "json" // one JSON object per line
)

// ParseLogFormat accepts "text" or "json".
func ParseLogFormat(s string) (LogFormat, error) {
	switch f := LogFormat(strings.ToLower(s)); f {
	case LogText, LogJSON:
		return f, nil
	}
	return "", fmt.Errorf("must be text or json, got %q", s)
}

// ParseLogLevel accepts debug, info, warn or error.
func ParseLogLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("must be one of debug, info, warn, error, got %q", s)
}

// resolvePaths makes relative certificate and CA file names relative to
// dir, the config file's directory, as for the other files it names.
func (t *TLS) resolvePaths(dir string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	for i := range t.Certs {
		abs(&t.Certs[i].Cert)
		abs(&t.Certs[i].Key)
	}
	abs(&t.ClientCA)
	abs(&t.ClientCAPath)
	abs(&t.CRLFile)
}
