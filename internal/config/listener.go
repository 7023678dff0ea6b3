package config

import (
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Listener is one address to accept clients on, written as a URL:
// mqtt://HOST:PORT (plain TCP), mqtts://HOST:PORT (TLS), ws://HOST:PORT/PATH
// and wss://HOST:PORT/PATH (WebSocket). The config accepts all four so files
// can be written ahead; which ones a build can serve is up to the caller.
type Listener struct {
	URL    string // as written
	Scheme string // "mqtt", "mqtts", "ws" or "wss"
	Addr   string // HOST:PORT for net.Listen; HOST may be empty (all interfaces)
	Path   string // HTTP path for ws/wss ("/mqtt" when absent); empty otherwise
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
	ln := Listener{URL: raw, Scheme: strings.ToLower(u.Scheme)}
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
