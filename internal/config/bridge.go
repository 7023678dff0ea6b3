package config

import (
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/roost-mqtt/roost/bridge"
	"github.com/roost-mqtt/roost/client"
	"github.com/roost-mqtt/roost/packet"
)

// Bridge is one entry of the bridges: section: a connection to another
// broker (package bridge; docs/bridges.md).
type Bridge struct {
	Name          string
	Addresses     []string // broker URLs, in failover order
	Version       packet.Version
	ClientID      string
	LocalClientID string
	CleanStart    bool
	// LocalCleanStart gives the local session a clean start; false keeps
	// store and forward.
	LocalCleanStart bool
	SessionExpiry   time.Duration // MQTT 5; 0: never expires
	Username        string
	Password        string
	TLS             BridgeTLS
	KeepAlive       time.Duration
	BackoffMin      time.Duration
	BackoffMax      time.Duration
	// TryPrivate sends the 3.1.1 bridge bit (mosquitto's try_private).
	TryPrivate bool
	// OutgoingRetain keeps RETAIN on messages forwarded out (mosquitto's
	// bridge_outgoing_retain).
	OutgoingRetain bool
	// BindAddress is the local IP address of the remote connection.
	BindAddress string
	// ReceiveMaximum is the MQTT 5 Receive Maximum asked of the remote;
	// 0: the bridge's default.
	ReceiveMaximum uint16
	// AttemptUnsubscribe unsubscribes out-only topics on the remote at
	// each connection (mosquitto's bridge_attempt_unsubscribe).
	AttemptUnsubscribe     bool
	Notifications          bool
	NotificationsLocalOnly bool
	NotificationTopic      string
	// ClusterShared makes a bridge on a cluster node split the traffic
	// with the other nodes' bridges through shared subscriptions
	// (bridge.Config.Unshared is its negation); default true.
	ClusterShared bool
	Topics        []bridge.Rule
	// RoundRobin: addresses as equals (mosquitto's round_robin true).
	RoundRobin bool
	// StartOnce: no reconnection once the connection is lost (mosquitto's
	// start_type once).
	StartOnce bool
	// StartLazy runs the bridge only while there is something to forward
	// (mosquitto's start_type lazy): it starts when Threshold messages
	// wait in its local session and stops after IdleTimeout without any.
	StartLazy   bool
	Threshold   int
	IdleTimeout time.Duration
	// MaxPacketSize caps the PUBLISH packets forwarded out; 0: no limit.
	MaxPacketSize uint32
	// TCPKeepAlive: probes on the remote connection (idle, interval,
	// count); zero: Go's default.
	TCPKeepAlive net.KeepAliveConfig
	// TCPUserTimeout: TCP_USER_TIMEOUT of the remote connection (Linux).
	TCPUserTimeout time.Duration
	// ReloadLazy keeps a changed bridge running with its old settings
	// until its remote connection drops (mosquitto's bridge_reload_type
	// lazy); false restarts it at once.
	ReloadLazy bool
}

// BridgeTLS is the TLS client configuration of a bridge, for mqtts:// and
// wss:// addresses.
type BridgeTLS struct {
	CA string // PEM CA file; "": the system roots
	// CAPath is a directory of PEM CA files, read as well (mosquitto's
	// bridge_capath).
	CAPath string
	// OSCerts trusts the system roots as well as CA and CAPath
	// (mosquitto's bridge_tls_use_os_certs).
	OSCerts    bool
	Cert, Key  string // client certificate and key, PEM
	ALPN       []string
	ServerName string // SNI and the name verified; "": the address's host
	// Insecure skips verifying the remote's certificate (mosquitto's
	// bridge_insecure): for tests only.
	Insecure bool
	// MinVersion is the oldest TLS version accepted; 0: TLS 1.2.
	MinVersion uint16
	// RequireOCSP refuses a remote that staples no good OCSP response
	// (mosquitto's bridge_require_ocsp).
	RequireOCSP bool
}

// DefaultBridge returns a bridge entry before its keys are read: the
// defaults of docs/bridges.md.
func DefaultBridge() Bridge {
	return Bridge{Version: packet.V5, KeepAlive: 60 * time.Second, BackoffMin: 5 * time.Second, Threshold: 10, IdleTimeout: 60 * time.Second,
		BackoffMax: 30 * time.Second, TryPrivate: true, AttemptUnsubscribe: true, OutgoingRetain: true, Notifications: true, ClusterShared: true}
}

// Config builds the tls.Config, reading the files. An error names the file.
func (t *BridgeTLS) Config() (*tls.Config, error) {
	c := &tls.Config{ServerName: t.ServerName, NextProtos: t.ALPN, InsecureSkipVerify: t.Insecure, MinVersion: cmp.Or(t.MinVersion, tls.VersionTLS12)}
	if t.CA != "" || t.CAPath != "" {
		if c.RootCAs = x509.NewCertPool(); t.OSCerts {
			sys, err := x509.SystemCertPool()
			if err != nil {
				return nil, fmt.Errorf("tls: system roots: %w", err)
			}
			c.RootCAs = sys
		}
	}
	if t.CA != "" {
		pem, err := os.ReadFile(t.CA)
		if err != nil {
			return nil, fmt.Errorf("tls.ca: %w", err)
		}
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca %s: no PEM certificate found", t.CA)
		}
	}
	if t.CAPath != "" {
		if err := addCADir(c.RootCAs, t.CAPath); err != nil {
			return nil, err
		}
	}
	if t.Cert != "" {
		kp, err := tls.LoadX509KeyPair(t.Cert, t.Key)
		if err != nil {
			return nil, fmt.Errorf("tls.cert %s, tls.key %s: %w", t.Cert, t.Key, err)
		}
		c.Certificates = []tls.Certificate{kp}
	}
	return c, nil
}

// addCADir adds the PEM certificates of every file in dir to pool, as
// mosquitto's capath (whose hashed names are links to the same files); it
// fails if none is found.
func addCADir(pool *x509.CertPool, dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("tls.capath: %w", err)
	}
	found := false
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		pem, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return fmt.Errorf("tls.capath: %w", err)
		}
		found = pool.AppendCertsFromPEM(pem) || found
	}
	if !found {
		return fmt.Errorf("tls.capath %s: no PEM certificate found", dir)
	}
	return nil
}

func (t *BridgeTLS) resolvePaths(dir string) {
	for _, p := range []*string{&t.CA, &t.CAPath, &t.Cert, &t.Key} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
}

// Options converts b to a bridge.Config, reading its TLS files.
func (b *Bridge) Options(logger *slog.Logger) (bridge.Config, error) {
	tc, err := b.TLS.Config()
	if err != nil {
		return bridge.Config{}, fmt.Errorf("bridge %s: %w", b.Name, err)
	}
	return bridge.Config{
		Name: b.Name, Addresses: b.Addresses, Version: b.Version, ClientID: b.ClientID, LocalClientID: b.LocalClientID,
		CleanStart: b.CleanStart, LocalCleanStart: b.LocalCleanStart, SessionExpiry: b.SessionExpiry,
		Username: b.Username, Password: b.Password, TLS: tc, KeepAlive: b.KeepAlive,
		Backoff:      client.Backoff{Min: b.BackoffMin, Max: b.BackoffMax},
		NoTryPrivate: !b.TryPrivate, NoAttemptUnsubscribe: !b.AttemptUnsubscribe, Notifications: b.Notifications,
		NoOutgoingRetain: !b.OutgoingRetain, BindAddress: b.BindAddress, ReceiveMaximum: b.ReceiveMaximum, NotificationsLocalOnly: b.NotificationsLocalOnly,
		NotificationTopic: b.NotificationTopic, Topics: b.Topics, Logger: logger,
		RoundRobin: b.RoundRobin, StartOnce: b.StartOnce, MaxPacketSize: b.MaxPacketSize,
		TCPKeepAlive: b.TCPKeepAlive, TCPUserTimeout: b.TCPUserTimeout, RequireOCSP: b.TLS.RequireOCSP,
		Unshared: !b.ClusterShared,
	}, nil
}

func (d *decoder) bridges(n *yaml.Node, path string, c *Config) {
	names := map[string]bool{}
	d.list(n, path, func(p string, v *yaml.Node) {
		b := DefaultBridge()
		d.bridge(v, p, &b)
		if names[b.Name] && b.Name != "" {
			d.errorf(v, "%s: bridge name %q used twice", p, b.Name)
		}
		d.checkBridge(v, p, &b)
		names[b.Name] = true
		c.Bridges = append(c.Bridges, b)
	})
}

var bridgeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// checkBridge reports the keys a bridge entry cannot do without.
func (d *decoder) checkBridge(v *yaml.Node, p string, b *Bridge) {
	switch {
	case b.Name == "":
		d.errorf(v, "%s: name is required", p)
	case !bridgeName.MatchString(b.Name):
		// It names a directory of the bridge's state in the store.
		d.errorf(v, "%s: name %q: use letters, digits, '.', '_' and '-', starting with a letter or digit", p, b.Name)
	case len(b.Addresses) == 0:
		d.errorf(v, "%s: addresses: at least one remote broker URL is required", p)
	case len(b.Topics) == 0:
		d.errorf(v, "%s: topics: at least one topic is required", p)
	case b.TLS.Key != "" && b.TLS.Cert == "" || b.TLS.Cert != "" && b.TLS.Key == "":
		d.errorf(v, "%s: tls: cert and key go together", p)
	case b.StartLazy && b.LocalCleanStart:
		// Dormant, the bridge has no local connection: only a kept
		// session queues for it.
		d.errorf(v, "%s: start: lazy needs the local session kept (local_clean_start: false)", p)
	case b.Password != "" && b.Username == "" && b.Version != packet.V5:
		// [MQTT-3.1.2-22]: mosquitto closes such a connection at once.
		d.errorf(v, "%s: password: MQTT 3.1.1 sends no password without a username", p)
	}
}

// ParseBridge reads one bridge entry on its own, as the admin API
// receives it: a JSON (or YAML) object with the keys of a bridges: item,
// the same defaults and the same checks. Errors start with name. TLS file
// names must be absolute: there is no configuration file for a relative
// one to be relative to.
func ParseBridge(name string, data []byte) (Bridge, error) {
	d := &decoder{file: name}
	root, err := d.document(data)
	if err != nil {
		return Bridge{}, err
	}
	if root == nil {
		return Bridge{}, fmt.Errorf("%s: empty bridge: want an object such as {\"name\": \"cloud\", \"addresses\": [...], \"topics\": [...]}", name)
	}
	b := DefaultBridge()
	d.bridge(root, "bridge", &b)
	d.checkBridge(root, "bridge", &b)
	for _, f := range []struct{ key, v string }{{"ca", b.TLS.CA}, {"capath", b.TLS.CAPath}, {"cert", b.TLS.Cert}, {"key", b.TLS.Key}} {
		if f.v != "" && !filepath.IsAbs(f.v) {
			d.errorf(root, "bridge: tls.%s: %q: give an absolute path", f.key, f.v)
		}
	}
	if len(d.errs) > 0 {
		return Bridge{}, errors.Join(d.errs...)
	}
	return b, nil
}

func (d *decoder) bridge(n *yaml.Node, path string, b *Bridge) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, "%s: must be a mapping such as {name: cloud, addresses: [...], topics: [...]}, got %s", path, describe(n))
		return
	}
	var version string
	d.mapping(n, path, map[string]field{
		"name":      d.str(&b.Name),
		"addresses": func(p string, v *yaml.Node) { d.bridgeAddresses(v, p, b) },
		"protocol": func(p string, v *yaml.Node) {
			d.oneOf(&version, "3.1", "3.1.1", "5")(p, v)
			switch version {
			case "3.1":
				b.Version = packet.V31
			case "3.1.1":
				b.Version = packet.V311
			}
		},
		"round_robin": func(p string, v *yaml.Node) { d.boolean(v, p, &b.RoundRobin) },
		"start": func(p string, v *yaml.Node) {
			var st string
			d.oneOf(&st, "automatic", "once", "lazy")(p, v)
			b.StartOnce, b.StartLazy = st == "once", st == "lazy"
		},
		"threshold":    func(p string, v *yaml.Node) { b.Threshold = int(d.intOr(v, p, 1, math.MaxInt32)) },
		"idle_timeout": func(p string, v *yaml.Node) { d.duration(v, p, time.Second, &b.IdleTimeout) },
		"reload": func(p string, v *yaml.Node) {
			var r string
			d.oneOf(&r, "immediate", "lazy")(p, v)
			b.ReloadLazy = r == "lazy"
		},
		"max_packet_size": func(p string, v *yaml.Node) {
			if n, ok := d.integer(v, p, 0, math.MaxUint32); ok {
				b.MaxPacketSize = uint32(n)
			}
		},
		"tcp_keepalive": func(p string, v *yaml.Node) {
			b.TCPKeepAlive.Enable = true
			d.mapping(v, p, map[string]field{
				"idle":     func(p string, v *yaml.Node) { d.duration(v, p, time.Second, &b.TCPKeepAlive.Idle) },
				"interval": func(p string, v *yaml.Node) { d.duration(v, p, time.Second, &b.TCPKeepAlive.Interval) },
				"count": func(p string, v *yaml.Node) {
					b.TCPKeepAlive.Count = int(d.intOr(v, p, 1, 127))
				},
			})
		},
		"tcp_user_timeout":    func(p string, v *yaml.Node) { d.duration(v, p, time.Millisecond, &b.TCPUserTimeout) },
		"client_id":           d.str(&b.ClientID),
		"local_client_id":     d.str(&b.LocalClientID),
		"clean_start":         func(p string, v *yaml.Node) { d.boolean(v, p, &b.CleanStart) },
		"local_clean_start":   func(p string, v *yaml.Node) { d.boolean(v, p, &b.LocalCleanStart) },
		"session_expiry":      func(p string, v *yaml.Node) { d.duration(v, p, 0, &b.SessionExpiry) },
		"username":            d.str(&b.Username),
		"password":            d.str(&b.Password),
		"tls":                 func(p string, v *yaml.Node) { d.bridgeTLS(v, p, &b.TLS) },
		"keep_alive":          func(p string, v *yaml.Node) { d.duration(v, p, 5*time.Second, &b.KeepAlive) },
		"backoff":             func(p string, v *yaml.Node) { d.bridgeBackoff(v, p, b) },
		"try_private":         func(p string, v *yaml.Node) { d.boolean(v, p, &b.TryPrivate) },
		"attempt_unsubscribe": func(p string, v *yaml.Node) { d.boolean(v, p, &b.AttemptUnsubscribe) },
		"outgoing_retain":     func(p string, v *yaml.Node) { d.boolean(v, p, &b.OutgoingRetain) },
		"bind_address": func(p string, v *yaml.Node) {
			d.str(&b.BindAddress)(p, v)
			if b.BindAddress != "" && net.ParseIP(b.BindAddress) == nil {
				d.errorf(v, "%s: must be an IP address, got %q", p, b.BindAddress)
			}
		},
		"receive_maximum":          uint16Field(d, 1, &b.ReceiveMaximum),
		"notifications":            func(p string, v *yaml.Node) { d.boolean(v, p, &b.Notifications) },
		"notifications_local_only": func(p string, v *yaml.Node) { d.boolean(v, p, &b.NotificationsLocalOnly) },
		"notification_topic":       d.str(&b.NotificationTopic),
		"cluster_shared":           func(p string, v *yaml.Node) { d.boolean(v, p, &b.ClusterShared) },
		"topics":                   func(p string, v *yaml.Node) { d.bridgeTopics(v, p, b) },
	})
}

func (d *decoder) bridgeAddresses(n *yaml.Node, path string, b *Bridge) {
	d.list(n, path, func(p string, v *yaml.Node) {
		if !d.scalar(v, p, "a broker URL such as mqtts://broker.example.com:8883") {
			return
		}
		u, err := url.Parse(v.Value)
		switch {
		case err != nil:
			d.errorf(v, "%s: %v", p, err)
		case u.Host == "":
			d.errorf(v, "%s: %q has no host; want a URL such as mqtt://host:1883", p, v.Value)
		default:
			switch u.Scheme {
			case "mqtt", "tcp", "mqtts", "ssl", "tls", "ws", "wss":
				b.Addresses = append(b.Addresses, v.Value)
			default:
				d.errorf(v, "%s: scheme %q: want mqtt, mqtts, ws or wss", p, u.Scheme)
			}
		}
	})
}

func (d *decoder) bridgeTLS(n *yaml.Node, path string, t *BridgeTLS) {
	d.mapping(n, path, map[string]field{
		"ca":           d.str(&t.CA),
		"capath":       d.str(&t.CAPath),
		"os_certs":     func(p string, v *yaml.Node) { d.boolean(v, p, &t.OSCerts) },
		"cert":         d.str(&t.Cert),
		"key":          d.str(&t.Key),
		"sni":          d.str(&t.ServerName),
		"insecure":     func(p string, v *yaml.Node) { d.boolean(v, p, &t.Insecure) },
		"require_ocsp": func(p string, v *yaml.Node) { d.boolean(v, p, &t.RequireOCSP) },
		"min_version": func(p string, v *yaml.Node) {
			var s string
			d.oneOf(&s, "1.1", "1.2", "1.3")(p, v)
			t.MinVersion = map[string]uint16{"1.1": tls.VersionTLS11, "1.3": tls.VersionTLS13}[s]
		},
		"alpn": func(p string, v *yaml.Node) {
			d.list(v, p, func(p string, v *yaml.Node) {
				if d.scalar(v, p, "a protocol name such as x-amzn-mqtt-ca") {
					t.ALPN = append(t.ALPN, v.Value)
				}
			})
		},
	})
}

func (d *decoder) bridgeBackoff(n *yaml.Node, path string, b *Bridge) {
	d.mapping(n, path, map[string]field{
		"min": func(p string, v *yaml.Node) { d.duration(v, p, time.Millisecond, &b.BackoffMin) },
		"max": func(p string, v *yaml.Node) { d.duration(v, p, time.Millisecond, &b.BackoffMax) },
	})
	if b.BackoffMax < b.BackoffMin {
		d.errorf(n, "%s: max %v is below min %v", path, b.BackoffMax, b.BackoffMin)
	}
}

// bridgeTopics reads each topic either as a mosquitto topic line
// ("sensors/# out 1 edge/ cloud/") or as a mapping of the same fields.
func (d *decoder) bridgeTopics(n *yaml.Node, path string, b *Bridge) {
	d.list(n, path, func(p string, v *yaml.Node) {
		if v.Kind == yaml.ScalarNode && !isNull(v) {
			r, err := bridge.ParseTopicLine(v.Value)
			if d.ok(v, p, err) {
				b.Topics = append(b.Topics, r)
			}
			return
		}
		r := bridge.Rule{Direction: bridge.Out}
		var dir string
		d.mapping(v, p, map[string]field{
			"pattern":       func(p string, v *yaml.Node) { d.anyStr(v, p, &r.Pattern) },
			"direction":     func(p string, v *yaml.Node) { d.oneOf(&dir, "out", "in", "both")(p, v) },
			"qos":           func(p string, v *yaml.Node) { r.QoS = packet.QoS(d.intOr(v, p, 0, 2)) },
			"local_prefix":  func(p string, v *yaml.Node) { d.anyStr(v, p, &r.LocalPrefix) },
			"remote_prefix": func(p string, v *yaml.Node) { d.anyStr(v, p, &r.RemotePrefix) },
		})
		if dir != "" {
			r.Direction, _ = bridge.ParseDirection(dir)
		}
		if err := r.Validate(); err != nil {
			d.errorf(v, "%s: %v", p, err)
			return
		}
		b.Topics = append(b.Topics, r)
	})
}

// anyStr reads a string that may be empty.
func (d *decoder) anyStr(v *yaml.Node, path string, dst *string) {
	if v.Kind == yaml.ScalarNode && !isNull(v) {
		*dst = v.Value
		return
	}
	d.errorf(v, "%s: must be a string, got %s", path, describe(v))
}

func (d *decoder) intOr(v *yaml.Node, path string, min, max int64) int64 {
	n, _ := d.integer(v, path, min, max)
	return n
}

// CheckBridges reports bridge settings that parse but cannot work
// together, such as two bridges with one client id.
func (c *Config) CheckBridges() error {
	var errs []error
	ids := map[string]string{}
	for _, b := range c.Bridges {
		for _, id := range []string{b.ClientID, b.LocalClientID} {
			if id == "" {
				continue
			}
			if other, dup := ids[id]; dup {
				errs = append(errs, fmt.Errorf("bridges %s and %s: client id %q used twice", other, b.Name, id))
			}
			ids[id] = b.Name
		}
	}
	return errors.Join(errs...)
}
