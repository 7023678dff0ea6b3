package config

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/roost-mqtt/roost/bridge"
	"github.com/roost-mqtt/roost/packet"
)

// A mosquitto.conf is read as it is (roost serve --config
// /etc/mosquitto/mosquitto.conf): one "key value" per line, # comments.
// Every option of mosquitto 2.0 is either honoured, accepted with a
// warning when it only concerns mosquitto's own logging or process
// (log_dest, pid_file, user, ...), or refused with the file, the line and
// the reason: an option silently ignored would change what the broker
// does without anyone noticing. docs/bridges.md and docs/config.md list
// what is read.

// mosquittoLine matches a mosquitto option line: a lower-case key, then
// spaces and a value or nothing. YAML's "key:" does not match.
var mosquittoLine = regexp.MustCompile(`^[a-z][a-z0-9_.]*(\s|$)`)

// IsMosquitto reports whether data is a mosquitto configuration rather
// than Roost's YAML: its first line that is neither blank nor a comment
// is a mosquitto option line.
func IsMosquitto(data []byte) bool {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		return mosquittoLine.MatchString(l) && !strings.Contains(strings.Fields(l)[0], ":")
	}
	return false
}

// mosqListener is a listener being read.
type mosqListener struct {
	port, bind, protocol string
	cert, key, ca        string
	requireCert          bool
	identity             bool
	tlsVersion           string
	maxConns             int
	line                 int
	mount                string
	capath               string
	crl                  string
	ciphers              []string
	subject              bool // use_subject_as_username
	usernameAsID         bool // use_username_as_clientid
	maxQoS               *int
	iface                string // bind_interface
	aliasMax             *int64 // max_topic_alias
	httpDir              string
	// With per_listener_settings true: the listener's own security
	// options.
	anon         *bool
	passwordFile string
	aclFile      string
	ids          *ClientIDs
}

// mosqReader reads one mosquitto configuration and its include_dir files.
type mosqReader struct {
	c         *Config
	errs      []error
	warnings  []string
	def       *mosqListener // "port" / "bind_address" before any listener
	listeners []*mosqListener
	cur       *mosqListener
	bridge    int          // index in c.Bridges of the current connection; -1 before any
	bridgeTLS map[int]bool // bridge_cafile set: the addresses are mqtts
	localCS   map[int]bool // local_cleansession given
	anonSet   bool
	// perListener is per_listener_settings true; securitySeen that an
	// option it affects was read (it must come first, as in mosquitto).
	perListener, securitySeen bool
	file                      string
	line                      int
}

// ParseMosquitto reads a mosquitto.conf. name is the file's path (for
// errors and include_dir); data its contents.
func ParseMosquitto(name string, data []byte) (*Config, error) {
	r := &mosqReader{c: Default(), bridge: -1, bridgeTLS: map[int]bool{}, localCS: map[int]bool{}}
	r.c.ClientIDs.Prefix = mosquittoIDPrefix
	r.c.Limits.TopicAliasMaximum = 10   // mosquitto's max_topic_alias default
	r.c.Auth.CheckRetainSource = true   // mosquitto's default
	r.c.Auth.AllowAnonymous = new(bool) // false: mosquitto 2.0's default once a listener is configured
	r.c.Store.Memory = true             // persistence false
	r.read(name, data)
	r.finish()
	if len(r.errs) > 0 {
		return nil, errors.Join(r.errs...)
	}
	r.c.Warnings = r.warnings
	return r.c, nil
}

func (r *mosqReader) errorf(format string, args ...any) {
	r.errs = append(r.errs, &Error{File: filepath.Base(r.file), Line: r.line, Msg: fmt.Sprintf(format, args...)})
}

func (r *mosqReader) warnf(format string, args ...any) {
	r.warnings = append(r.warnings, fmt.Sprintf("%s:%d: %s", filepath.Base(r.file), r.line, fmt.Sprintf(format, args...)))
}

func (r *mosqReader) read(name string, data []byte) {
	file, line := r.file, r.line
	defer func() { r.file, r.line = file, line }()
	r.file = name
	for i, l := range strings.Split(string(data), "\n") {
		r.line = i + 1
		l = strings.TrimRight(l, " \t\r")
		if strings.TrimSpace(l) == "" || strings.HasPrefix(strings.TrimSpace(l), "#") {
			continue
		}
		key, val, _ := strings.Cut(strings.TrimSpace(l), " ")
		r.option(key, strings.TrimSpace(val))
	}
}

func (r *mosqReader) option(key, val string) {
	if f, ok := r.bridgeOptions()[key]; ok {
		if r.bridge < 0 {
			r.errorf("%s: only allowed after a connection line", key)
			return
		}
		f(val)
		return
	}
	if f, ok := r.globalOptions()[key]; ok {
		f(val)
		return
	}
	if why, ok := mosquittoProcessOnly[key]; ok {
		r.warnf("%s: ignored (%s)", key, why)
		return
	}
	if why, ok := mosquittoRefused[key]; ok {
		r.errorf("%s: not supported by Roost: %s", key, why)
		return
	}
	if strings.HasPrefix(key, "auth_opt_") || strings.HasPrefix(key, "plugin_opt_") {
		r.errorf("%s: not supported by Roost: options of a mosquitto plugin, which cannot load into Roost", key)
		return
	}
	r.errorf("unknown mosquitto option %q", key)
}

// mosquittoProcessOnly are options about mosquitto's own logging and
// process, which Roost's flags and service manager cover.
var mosquittoProcessOnly = map[string]string{
	"log_dest": "Roost logs to stderr; see --log-format", "log_type": "see --log-level", "log_timestamp": "Roost's log lines carry a time",
	"log_timestamp_format": "Roost's log lines carry a time", "log_facility": "Roost logs to stderr", "connection_messages": "Roost logs connections at debug level",
	"pid_file": "no pid file", "user": "Roost does not change user; run it as the user it should be", "websockets_log_level": "Roost logs to stderr",
	"autosave_interval": "Roost's store writes every change (store.sync)", "autosave_on_changes": "Roost's store writes every change (store.sync)",
	"persistence_file":               "Roost's store is a directory (persistence_location)",
	"dhparamfile":                    "Go's crypto/tls has no DHE suites: its ECDHE suites give forward secrecy without DH parameters",
	"websockets_headers_size":        "Roost's WebSocket listeners take request headers up to 16 KiB",
	"auth_plugin_deny_special_chars": "it only concerns auth plugins, which cannot load into Roost",
}

// mosquittoRefused are options Roost cannot honour, with the reason.
var mosquittoRefused = map[string]string{
	"psk_hint":                 "Go's crypto/tls does not implement TLS-PSK",
	"psk_file":                 "Go's crypto/tls does not implement TLS-PSK",
	"upgrade_outgoing_qos":     "against the MQTT specification; not supported",
	"memory_limit":             "not supported yet",
	"plugin":                   "mosquitto plugins cannot load into Roost",
	"tls_engine":               "OpenSSL engines: Go's crypto/tls reads keys from PEM files only",
	"tls_engine_kpass_sha1":    "OpenSSL engines: Go's crypto/tls reads keys from PEM files only",
	"tls_keyform":              "OpenSSL engines: Go's crypto/tls reads keys from PEM files only",
	"auth_plugin":              "mosquitto plugins cannot load into Roost",
	"accept_protocol_versions": "not supported yet",
	"enable_control_api":       "not supported",
	"bridge_identity":          "Go's crypto/tls does not implement TLS-PSK",
	"bridge_psk":               "Go's crypto/tls does not implement TLS-PSK",
}

func (r *mosqReader) globalOptions() map[string]func(string) {
	c := r.c
	return map[string]func(string){
		"listener": func(v string) {
			f := strings.Fields(v)
			if len(f) < 1 || len(f) > 2 {
				r.errorf("listener: want PORT [BIND-ADDRESS], got %q", v)
				return
			}
			r.cur = &mosqListener{port: f[0], line: r.line}
			if len(f) == 2 {
				r.cur.bind = f[1]
			}
			r.listeners = append(r.listeners, r.cur)
		},
		"port":         func(v string) { r.defListener().port = v },
		"bind_address": func(v string) { r.defListener().bind = v },
		"socket_domain": func(v string) {
			l := r.listener()
			switch {
			case v == "ipv4" && l.bind == "":
				l.bind = "0.0.0.0"
			case v == "ipv6" && l.bind == "":
				l.bind = "::"
			case v != "ipv4" && v != "ipv6":
				r.errorf("socket_domain: want ipv4 or ipv6, got %q", v)
			}
		},
		"protocol": func(v string) {
			if v != "mqtt" && v != "websockets" {
				r.errorf("protocol: want mqtt or websockets, got %q", v)
			}
			r.listener().protocol = v
		},
		"certfile":                 func(v string) { r.listener().cert = v },
		"keyfile":                  func(v string) { r.listener().key = v },
		"cafile":                   func(v string) { r.listener().ca = v },
		"require_certificate":      func(v string) { r.boolean(v, &r.listener().requireCert) },
		"use_identity_as_username": func(v string) { r.boolean(v, &r.listener().identity) },
		"use_subject_as_username":  func(v string) { r.boolean(v, &r.listener().subject) },
		"capath":                   func(v string) { r.listener().capath = v },
		"crlfile":                  func(v string) { r.listener().crl = v },
		"ciphers": func(v string) {
			names, err := openSSLCipherList(v)
			if err != nil {
				r.errorf("ciphers: %v", err)
				return
			}
			r.listener().ciphers = names
		},
		"ciphers_tls1.3": func(v string) {
			if err := checkTLS13Ciphers(v); err != nil {
				r.errorf("ciphers_tls1.3: %v", err)
			}
		},
		"tls_version": func(v string) {
			// mosquitto 2.0: the lowest version accepted.
			if v != "tlsv1.1" && v != "tlsv1.2" && v != "tlsv1.3" {
				r.errorf("tls_version: want tlsv1.1, tlsv1.2 or tlsv1.3, got %q", v)
			}
			r.listener().tlsVersion = v
		},
		"max_connections": func(v string) {
			if n, ok := r.integer(v, -1, math.MaxInt32); ok {
				r.listener().maxConns = int(max(n, 0))
			}
		},
		"allow_anonymous": func(v string) {
			var on bool
			r.boolean(v, &on)
			if l := r.security(); l != nil {
				l.anon = &on
				return
			}
			r.anonSet = true
			c.Auth.AllowAnonymous = &on
		},
		"password_file": func(v string) {
			if l := r.security(); l != nil {
				l.passwordFile = v
			} else {
				c.Auth.PasswordFile = v
			}
		},
		"acl_file": func(v string) {
			if l := r.security(); l != nil {
				l.aclFile = v
			} else {
				c.Auth.ACLFile = v
			}
		},
		"allow_zero_length_clientid": func(v string) {
			var on bool
			if r.boolean(v, &on) {
				r.clientIDs().RefuseEmpty = !on
			}
		},
		"auto_id_prefix": func(v string) {
			if v == "" {
				r.errorf("auto_id_prefix: want a prefix")
				return
			}
			r.clientIDs().Prefix = v
		},
		"mount_point": func(v string) {
			if err := CheckMountPoint(v); err != nil || v == "" {
				r.errorf("mount_point: want a topic prefix without + or #, got %q", v)
				return
			}
			r.listener().mount = v
		},
		"max_keepalive": func(v string) {
			// 0: no cap, as in mosquitto (keep alive 0 allowed).
			if n, ok := r.integer(v, 0, 65535); ok {
				c.Limits.MaxKeepAlive = uint16(n)
			}
		},
		"max_inflight_bytes": func(v string) {
			if n, ok := r.integer(v, 0, math.MaxInt64); ok {
				c.Limits.MaxInflightBytes = int(n)
			}
		},
		"message_size_limit": func(v string) {
			if n, ok := r.integer(v, 0, maxPayloadSize); ok {
				c.Limits.MaxPayloadSize = int(n)
			}
		},
		"persistent_client_expiration": func(v string) {
			if d, ok := r.expiration(v); ok {
				c.Limits.PersistentSessionExpiry = d
			}
		},
		"persistence":          func(v string) { var b bool; r.boolean(v, &b); c.Store.Memory = !b },
		"persistence_location": func(v string) { c.Store.Data = v },
		"max_packet_size": func(v string) {
			if n, ok := r.integer(v, 0, maxPacketSize); ok && n > 0 {
				c.Limits.MaxPacketSize = uint32(n)
			}
		},
		"max_inflight_messages": func(v string) {
			if n, ok := r.integer(v, 0, 65535); ok {
				c.Limits.MaxInflight = uint16(n)
				if n == 0 {
					c.Limits.MaxInflight = 65535 // mosquitto: 0 is no limit
				}
			}
		},
		"max_queued_messages": func(v string) {
			if n, ok := r.integer(v, 0, math.MaxInt32); ok {
				c.Limits.MaxQueued = int(n)
				if n == 0 {
					c.Limits.MaxQueued = math.MaxInt32
				}
			}
		},
		"max_queued_bytes": func(v string) {
			if n, ok := r.integer(v, 0, math.MaxInt64); ok {
				c.Limits.MaxQueuedBytes = int(n)
				if n == 0 {
					c.Limits.MaxQueuedBytes = math.MaxInt64
				}
			}
		},
		"queue_qos0_messages": func(v string) { r.boolean(v, &c.Limits.QueueQoS0) },
		"retain_available":    func(v string) { r.boolean(v, &c.Retain) },
		"sys_interval": func(v string) {
			if n, ok := r.integer(v, 0, math.MaxInt32); ok {
				c.SysInterval = time.Duration(n) * time.Second
			}
		},
		"include_dir":              r.includeDir,
		"use_username_as_clientid": func(v string) { r.boolean(v, &r.listener().usernameAsID) },
		"max_qos": func(v string) {
			if n, ok := r.integer(v, 0, 2); ok {
				q := int(n)
				r.listener().maxQoS = &q
			}
		},
		"clientid_prefixes": func(v string) { c.ClientIDs.RequiredPrefix = v },
		"bind_interface":    func(v string) { r.listener().iface = v },
		"http_dir":          func(v string) { r.listener().httpDir = v },
		"set_tcp_nodelay": func(v string) {
			var on bool
			if r.boolean(v, &on) && !on {
				r.warnf("set_tcp_nodelay false: Roost always sets TCP_NODELAY")
			}
		},
		"allow_duplicate_messages": func(v string) {
			// Deprecated in mosquitto 2.0. Either way, Roost sends a
			// message once per session however many of its
			// subscriptions match, which true (duplicates allowed) also
			// permits.
			var on bool
			r.boolean(v, &on)
		},
		"check_retain_source": func(v string) { r.boolean(v, &c.Auth.CheckRetainSource) },
		"max_topic_alias": func(v string) {
			if n, ok := r.integer(v, 0, 65535); ok {
				r.listener().aliasMax = &n
			}
		},
		"per_listener_settings": func(v string) {
			var on bool
			if !r.boolean(v, &on) {
				return
			}
			if on && r.securitySeen {
				// mosquitto refuses the same file.
				r.errorf("per_listener_settings must be set before any other security settings")
			}
			r.perListener = on
		},
		"connection": func(v string) {
			if !bridgeName.MatchString(v) {
				r.errorf("connection: want one name of letters, digits, '.', '_' and '-', got %q", v)
				return
			}
			b := DefaultBridge()
			b.Name, b.Version = v, packet.V311 // mosquitto's bridge_protocol_version default
			b.ReloadLazy = true                // and its bridge_reload_type default
			c.Bridges = append(c.Bridges, b)
			r.bridge = len(c.Bridges) - 1
		},
	}
}

func (r *mosqReader) bridgeOptions() map[string]func(string) {
	b, bi := new(Bridge), r.bridge // a dummy before any connection: option refuses the key
	if bi >= 0 {
		b = &r.c.Bridges[bi]
	}
	str := func(dst *string) func(string) { return func(v string) { *dst = v } }
	return map[string]func(string){
		"address":   func(v string) { r.addresses(b, v) },
		"addresses": func(v string) { r.addresses(b, v) },
		"topic": func(v string) {
			rule, err := bridge.ParseTopicLine(v)
			if err != nil {
				r.errorf("topic: %v", err)
				return
			}
			b.Topics = append(b.Topics, rule)
		},
		"bridge_protocol_version": func(v string) {
			switch v {
			case "mqttv31":
				b.Version = packet.V31
			case "mqttv311":
				b.Version = packet.V311
			case "mqttv50":
				b.Version = packet.V5
			default:
				r.errorf("bridge_protocol_version: want mqttv31, mqttv311 or mqttv50, got %q", v)
			}
		},
		"cleansession": func(v string) {
			r.boolean(v, &b.CleanStart)
			if !r.localCS[bi] {
				b.LocalCleanStart = b.CleanStart // local_cleansession's default
			}
		},
		"local_cleansession": func(v string) { r.localCS[bi] = true; r.boolean(v, &b.LocalCleanStart) },
		"remote_clientid":    str(&b.ClientID),
		"clientid":           str(&b.ClientID),
		"local_clientid":     str(&b.LocalClientID),
		"remote_username":    str(&b.Username),
		"username":           str(&b.Username),
		"remote_password":    str(&b.Password),
		"password":           str(&b.Password),
		"local_username": func(string) {
			r.warnf("local_username: not needed: a bridge's local side is trusted in Roost")
		},
		"local_password":           func(string) {},
		"try_private":              func(v string) { r.boolean(v, &b.TryPrivate) },
		"notifications":            func(v string) { r.boolean(v, &b.Notifications) },
		"notifications_local_only": func(v string) { r.boolean(v, &b.NotificationsLocalOnly) },
		"notification_topic":       str(&b.NotificationTopic),
		"keepalive_interval": func(v string) {
			if n, ok := r.integer(v, 5, 65535); ok {
				b.KeepAlive = time.Duration(n) * time.Second
			}
		},
		"restart_timeout": func(v string) {
			f := strings.Fields(v)
			var n []int64
			for _, s := range f {
				if x, ok := r.integer(s, 1, 86400); ok {
					n = append(n, x)
				}
			}
			switch {
			case len(f) == 1 && len(n) == 1:
				b.BackoffMin, b.BackoffMax = time.Duration(n[0])*time.Second, time.Duration(n[0])*time.Second
			case len(f) == 2 && len(n) == 2:
				b.BackoffMin, b.BackoffMax = time.Duration(n[0])*time.Second, time.Duration(n[1])*time.Second
			case len(n) == len(f):
				r.errorf("restart_timeout: want CONSTANT or BASE CAP seconds, got %q", v)
			}
		},
		"round_robin": func(v string) { r.boolean(v, &b.RoundRobin) },
		"start_type": func(v string) {
			switch v {
			case "automatic", "once", "lazy":
				b.StartOnce, b.StartLazy = v == "once", v == "lazy"
			default:
				r.errorf("start_type: want automatic, lazy or once, got %q", v)
			}
		},
		"bridge_reload_type": func(v string) {
			switch v {
			case "lazy", "immediate":
				b.ReloadLazy = v == "lazy"
			default:
				r.errorf("bridge_reload_type: want lazy or immediate, got %q", v)
			}
		},
		"bridge_tcp_keepalive": func(v string) {
			f := strings.Fields(v)
			if len(f) != 3 {
				r.errorf("bridge_tcp_keepalive: want idle, interval and count, got %q", v)
				return
			}
			idle, ok1 := r.integer(f[0], 1, 32767)
			intvl, ok2 := r.integer(f[1], 1, 32767)
			cnt, ok3 := r.integer(f[2], 1, 127)
			if ok1 && ok2 && ok3 {
				b.TCPKeepAlive = net.KeepAliveConfig{Enable: true, Idle: time.Duration(idle) * time.Second,
					Interval: time.Duration(intvl) * time.Second, Count: int(cnt)}
			}
		},
		"bridge_tcp_user_timeout": func(v string) {
			if n, ok := r.integer(v, 0, math.MaxInt32); ok {
				b.TCPUserTimeout = time.Duration(n) * time.Millisecond
			}
		},
		"bridge_require_ocsp": func(v string) { r.boolean(v, &b.TLS.RequireOCSP) },
		"idle_timeout": func(v string) {
			if n, ok := r.integer(v, 1, math.MaxInt32); ok {
				b.IdleTimeout = time.Duration(n) * time.Second
			}
		},
		"threshold": func(v string) {
			if n, ok := r.integer(v, 1, math.MaxInt32); ok {
				b.Threshold = int(n)
			}
		},
		"bridge_attempt_unsubscribe": func(v string) { r.boolean(v, &b.AttemptUnsubscribe) },
		"bridge_outgoing_retain":     func(v string) { r.boolean(v, &b.OutgoingRetain) },
		"bridge_bind_address": func(v string) {
			if net.ParseIP(v) == nil {
				r.errorf("bridge_bind_address: want an IP address, got %q", v)
			}
			b.BindAddress = v
		},
		"bridge_receive_maximum": func(v string) {
			if n, ok := r.integer(v, 1, 65535); ok {
				b.ReceiveMaximum = uint16(n)
			}
		},
		"bridge_capath":           func(v string) { b.TLS.CAPath = v; r.bridgeTLS[bi] = true },
		"bridge_tls_use_os_certs": func(v string) { r.boolean(v, &b.TLS.OSCerts) },
		"bridge_max_packet_size": func(v string) {
			if n, ok := r.integer(v, 0, math.MaxUint32); ok {
				b.MaxPacketSize = uint32(n)
			}
		},
		"bridge_cafile":   func(v string) { b.TLS.CA = v; r.bridgeTLS[bi] = true },
		"bridge_certfile": str(&b.TLS.Cert),
		"bridge_keyfile":  str(&b.TLS.Key),
		"bridge_insecure": func(v string) { r.boolean(v, &b.TLS.Insecure) },
		"bridge_alpn":     func(v string) { b.TLS.ALPN = []string{v} },
		"bridge_tls_version": func(v string) {
			switch v {
			case "tlsv1.2":
			case "tlsv1.1":
				b.TLS.MinVersion = tls.VersionTLS11
			case "tlsv1.3":
				b.TLS.MinVersion = tls.VersionTLS13
			default:
				r.errorf("bridge_tls_version: want tlsv1.1, tlsv1.2 or tlsv1.3, got %q", v)
			}
		},
		"bridge_session_expiry_interval": func(v string) {
			if n, ok := r.integer(v, 0, math.MaxUint32); ok {
				b.SessionExpiry = time.Duration(n) * time.Second
			}
		},
	}
}

func (r *mosqReader) want(v, only, msg string) {
	if v != only {
		r.errorf("%s, got %q", msg, v)
	}
}

func (r *mosqReader) wantBool(only bool, msg string) func(string) {
	return func(v string) {
		var b bool
		if r.boolean(v, &b) && b != only {
			r.errorf("%s", msg)
		}
	}
}

// addresses reads "host[:port] ..." (port 1883 by default).
func (r *mosqReader) addresses(b *Bridge, v string) {
	f := strings.Fields(v)
	if len(f) == 0 {
		r.errorf("address: want host[:port] ...")
	}
	for _, a := range f {
		if _, _, err := net.SplitHostPort(a); err != nil {
			if strings.Count(a, ":") > 1 {
				r.errorf("address %q: an IPv6 address needs a port, as in mosquitto", a)
				continue
			}
			a = net.JoinHostPort(a, "1883")
		}
		b.Addresses = append(b.Addresses, a) // the scheme is added by finish
	}
}

func (r *mosqReader) includeDir(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		r.errorf("include_dir: %v", err)
		return
	}
	var names []string
	for _, e := range ents {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".conf") {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names) // mosquitto reads them in order
	for _, n := range names {
		p := filepath.Join(dir, n)
		data, err := os.ReadFile(p)
		if err != nil {
			r.errorf("include_dir: %v", err)
			continue
		}
		r.read(p, data)
	}
}

func (r *mosqReader) boolean(v string, dst *bool) bool {
	switch v {
	case "true":
		*dst = true
	case "false":
		*dst = false
	default:
		r.errorf("want true or false, got %q", v)
		return false
	}
	return true
}

func (r *mosqReader) integer(v string, min, max int64) (int64, bool) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < min || n > max {
		r.errorf("want an integer from %d to %d, got %q", min, max, v)
		return 0, false
	}
	return n, true
}

// security notes an option that per_listener_settings affects and
// returns the listener it applies to, or nil when it applies to all.
func (r *mosqReader) security() *mosqListener {
	r.securitySeen = true
	if !r.perListener {
		return nil
	}
	return r.listener()
}

// clientIDs returns what allow_zero_length_clientid and auto_id_prefix
// set: the listener's with per_listener_settings true, else the
// server's.
func (r *mosqReader) clientIDs() *ClientIDs {
	l := r.security()
	if l == nil {
		return &r.c.ClientIDs
	}
	if l.ids == nil {
		l.ids = &ClientIDs{Prefix: mosquittoIDPrefix}
	}
	return l.ids
}

// mosquittoIDPrefix is mosquitto's auto_id_prefix default.
const mosquittoIDPrefix = "auto-"

// expiration reads persistent_client_expiration: a count and one of h d w
// m y (hour, day, week, month and year, a month being 30 days and a year
// 365, as mosquitto counts them).
func (r *mosqReader) expiration(v string) (time.Duration, bool) {
	units := map[byte]time.Duration{'h': time.Hour, 'd': 24 * time.Hour, 'w': 7 * 24 * time.Hour, 'm': 30 * 24 * time.Hour, 'y': 365 * 24 * time.Hour}
	if len(v) >= 2 {
		n, err := strconv.ParseUint(v[:len(v)-1], 10, 32)
		if u, ok := units[v[len(v)-1]]; ok && err == nil && n > 0 && time.Duration(n)*u/time.Second <= 0xFFFFFFFE {
			return time.Duration(n) * u, true
		}
	}
	r.errorf("persistent_client_expiration: want a count and a unit of h, d, w, m (30 days) or y (365 days), such as 14d, got %q", v)
	return 0, false
}

// listener returns the listener options apply to: the last "listener",
// else the default one.
func (r *mosqReader) listener() *mosqListener {
	if r.cur != nil {
		return r.cur
	}
	return r.defListener()
}

func (r *mosqReader) defListener() *mosqListener {
	if r.def == nil {
		r.def = &mosqListener{port: "1883", line: r.line}
	}
	return r.def
}

// finish turns the listeners and bridges read into the Config.
func (r *mosqReader) finish() {
	ls := r.listeners
	if r.def != nil {
		ls = append([]*mosqListener{r.def}, ls...)
	}
	if len(ls) == 0 {
		// mosquitto 2.0 without listeners: local only, anonymous allowed.
		ls = []*mosqListener{{port: "1883", bind: "127.0.0.1"}}
		if !r.anonSet {
			on := true
			r.c.Auth.AllowAnonymous = &on
		}
	}
	r.c.Listeners = r.c.Listeners[:0]
	for _, ml := range ls {
		r.line = ml.line
		r.addListener(ml)
	}
	for i := range r.c.Bridges {
		b := &r.c.Bridges[i]
		scheme := "mqtt://"
		if r.bridgeTLS[i] {
			scheme = "mqtts://"
		} else if b.TLS.Cert != "" || b.TLS.Insecure || len(b.TLS.ALPN) > 0 || b.TLS.RequireOCSP {
			r.errs = append(r.errs, fmt.Errorf("%s: connection %s: TLS options need bridge_cafile", filepath.Base(r.file), b.Name))
		}
		for j, a := range b.Addresses {
			b.Addresses[j] = scheme + a
		}
		if len(b.Addresses) == 0 || len(b.Topics) == 0 {
			r.errs = append(r.errs, fmt.Errorf("%s: connection %s: needs an address and at least one topic", filepath.Base(r.file), b.Name))
		}
		if b.StartLazy && b.LocalCleanStart {
			// A dormant bridge has no local connection in Roost: only a
			// kept session queues for it.
			r.errs = append(r.errs, fmt.Errorf("%s: connection %s: start_type lazy needs local_cleansession false in Roost", filepath.Base(r.file), b.Name))
		}
	}
	if err := r.c.CheckBridges(); err != nil {
		r.errs = append(r.errs, err)
	}
}

func (r *mosqReader) addListener(ml *mosqListener) {
	tlsOn := ml.cert != "" || ml.key != ""
	scheme := map[[2]bool]string{{false, false}: "mqtt", {true, false}: "mqtts", {false, true}: "ws", {true, true}: "wss"}[[2]bool{tlsOn, ml.protocol == "websockets"}]
	u := scheme + "://" + net.JoinHostPort(ml.bind, ml.port)
	ln, err := ParseListener(u)
	if err != nil {
		r.errorf("listener %s: %v", ml.port, err)
		return
	}
	ln.MaxConnections = ml.maxConns
	ln.MountPoint = ml.mount
	ln.UsernameAsClientID = ml.usernameAsID
	ln.MaxQoS = ml.maxQoS
	ln.Interface = ml.iface
	ln.WS.HTTPDir = ml.httpDir
	if ml.httpDir != "" && ml.protocol != "websockets" {
		r.errorf("listener %s: http_dir needs protocol websockets", ml.port)
	}
	if ml.aliasMax != nil {
		n := int(*ml.aliasMax)
		ln.TopicAliasMaximum = &n
	}
	if r.perListener {
		ln.Auth = &ListenerAuth{PasswordFile: ml.passwordFile, ACLFile: ml.aclFile}
		ln.ClientIDs = ml.ids
		// mosquitto 2.0: a listener without allow_anonymous refuses
		// anonymous clients.
		ln.Anonymous = ml.anon
		if ln.Anonymous == nil {
			ln.Anonymous = new(bool)
		}
		// Names must be unique: two listeners may share a port on
		// different addresses.
		ln.Name = ln.URL
	}
	if tlsOn {
		if ml.cert == "" || ml.key == "" {
			r.errorf("listener %s: certfile and keyfile go together", ml.port)
		}
		ln.TLS.Certs = []KeyPair{{Cert: ml.cert, Key: ml.key}}
		ln.TLS.ClientCA = ml.ca
		ln.TLS.ClientCAPath = ml.capath
		ln.TLS.CRLFile = ml.crl
		ln.TLS.RequireClientCert = ml.requireCert
		ln.TLS.CipherSuites = ml.ciphers
		switch ml.tlsVersion {
		case "tlsv1.1":
			ln.TLS.MinVersion = "1.1"
		case "tlsv1.3":
			ln.TLS.MinVersion = "1.3"
		}
		switch {
		case ml.identity: // it wins over use_subject_as_username, as in mosquitto
			ln.TLS.Identity = "cn"
			r.c.Auth.CertIdentityAsUsername = true
		case ml.subject:
			ln.TLS.Identity = "subject"
			r.c.Auth.CertIdentityAsUsername = true
		}
		if ln.TLS.Identity != "" && !ml.requireCert {
			// mosquitto takes the name only from a required certificate.
			r.errorf("listener %s: use_identity_as_username and use_subject_as_username need require_certificate true", ml.port)
		}
	} else if ml.ca != "" || ml.capath != "" || ml.crl != "" || ml.requireCert || ml.identity || ml.subject || ml.ciphers != nil || ml.tlsVersion != "" {
		r.errorf("listener %s: cafile, capath, require_certificate, use_identity_as_username, use_subject_as_username, ciphers and tls_version need certfile and keyfile", ml.port)
	}
	r.c.Listeners = append(r.c.Listeners, ln)
}
