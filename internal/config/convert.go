package config

import (
	"crypto/tls"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// WriteYAML writes c as a roost.yaml that parses back to the same
// configuration: what roost config convert prints for a mosquitto.conf.
// Limits are written when they differ from the defaults; comments say
// where a mosquitto option changed meaning. Relative paths are made
// absolute from the working directory, as mosquitto reads them, because a
// roost.yaml takes them relative to its own directory.
func (c *Config) WriteYAML(w io.Writer, source string) error {
	e := &yamlWriter{w: w}
	e.line(0, "# Converted from %s by roost config convert.", source)
	for _, warn := range c.Warnings {
		e.line(0, "# %s", warn)
	}
	e.listeners(c.Listeners)
	e.limits(&c.Limits)
	d := Default()
	if c.SysInterval != d.SysInterval {
		if c.SysInterval == 0 {
			e.line(0, "sys_interval: off")
		} else {
			e.line(0, "sys_interval: %s", dur(c.SysInterval))
		}
	}
	if c.Retain != d.Retain {
		e.line(0, "retain: %v", c.Retain)
	}
	e.store(&c.Store)
	e.auth(&c.Auth)
	e.clientIDs(0, &c.ClientIDs)
	e.bridges(c.Bridges)
	return e.err
}

type yamlWriter struct {
	w   io.Writer
	err error
}

func (e *yamlWriter) line(indent int, format string, args ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, "%s%s\n", strings.Repeat("  ", indent), fmt.Sprintf(format, args...))
	}
}

// q quotes a string for YAML: Go's double-quoted form is valid YAML.
func q(s string) string { return strconv.Quote(s) }

func abs(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

func dur(d time.Duration) string {
	switch {
	case d != 0 && d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d != 0 && d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return d.String()
}

func (e *yamlWriter) listeners(ls []Listener) {
	e.line(0, "listeners:")
	for _, l := range ls {
		e.line(1, "- url: %s", q(l.URL))
		if strings.HasPrefix(l.Addr, ":") {
			e.line(2, "# every address, as mosquitto's listener without a bind address")
		}
		if l.MaxConnections > 0 {
			e.line(2, "max_connections: %d", l.MaxConnections)
		}
		e.listenerPolicy(&l)
		if l.WS.HTTPDir != "" {
			e.line(2, "ws: {http_dir: %s} # mosquitto's http_dir: files for plain HTTP requests; directories are not listed", q(abs(l.WS.HTTPDir)))
		}
		t := l.TLS
		if len(t.Certs) == 0 {
			continue
		}
		e.line(2, "tls:")
		e.line(3, "certs:")
		for _, kp := range t.Certs {
			e.line(4, "- {cert: %s, key: %s}", q(abs(kp.Cert)), q(abs(kp.Key)))
		}
		if t.ClientCA != "" {
			e.line(3, "client_ca: %s", q(abs(t.ClientCA)))
		}
		if t.ClientCAPath != "" {
			e.line(3, "client_ca_path: %s # mosquitto's capath: every PEM file in it is read, c_rehash'd or not", q(abs(t.ClientCAPath)))
		}
		if t.CRLFile != "" {
			e.line(3, "crl_file: %s # mosquitto's crlfile: a client whose CA has no valid CRL in it is refused too", q(abs(t.CRLFile)))
		}
		if len(t.CipherSuites) > 0 {
			e.line(3, "cipher_suites: # mosquitto's ciphers, by their IANA names; TLS 1.2 and below only")
			for _, c := range t.CipherSuites {
				e.line(4, "- %s", c)
			}
		}
		if t.RequireClientCert {
			e.line(3, "require_client_cert: true")
		}
		switch t.Identity {
		case "subject":
			e.line(3, "identity: subject # use_subject_as_username: the whole subject, RFC 2253 form")
		case "":
		default:
			e.line(3, "identity: %s", t.Identity)
		}
		if t.MinVersion != "" {
			e.line(3, "min_version: %s", q(t.MinVersion))
		}
	}
}

func (e *yamlWriter) limits(l *Limits) {
	d := Default().Limits
	var lines []string
	add := func(key string, v, def any, note string) {
		if v != def {
			s := fmt.Sprintf("%s: %v", key, v)
			if note != "" {
				s += " # " + note
			}
			lines = append(lines, s)
		}
	}
	add("max_packet_size", l.MaxPacketSize, d.MaxPacketSize, "")
	add("max_inflight", l.MaxInflight, d.MaxInflight, "per session, toward the client (mosquitto's max_inflight_messages)")
	add("max_queued", l.MaxQueued, d.MaxQueued, "")
	add("max_queued_bytes", l.MaxQueuedBytes, d.MaxQueuedBytes, "")
	add("queue_qos0", l.QueueQoS0, d.QueueQoS0, "")
	add("topic_alias_maximum", l.TopicAliasMaximum, d.TopicAliasMaximum, "mosquitto's default max_topic_alias; a listener's own is in listeners")
	add("max_keep_alive", l.MaxKeepAlive, d.MaxKeepAlive, "mosquitto's max_keepalive; MQTT 3.1.x clients asking for more, or for 0, are refused (0x02), as mosquitto 2.0.12 and later refuse them")
	add("max_inflight_bytes", l.MaxInflightBytes, d.MaxInflightBytes, "mosquitto's max_inflight_bytes: payload bytes")
	add("max_payload_size", l.MaxPayloadSize, d.MaxPayloadSize, "mosquitto's message_size_limit: larger messages are dropped, their QoS flow completed (MQTT 5: 0x83)")
	if l.PersistentSessionExpiry != d.PersistentSessionExpiry {
		lines = append(lines, fmt.Sprintf("persistent_session_expiry: %s # mosquitto's persistent_client_expiration, in hours (a month is 30 days, a year 365); MQTT 3.1.x sessions only", dur(l.PersistentSessionExpiry)))
	}
	if len(lines) == 0 {
		return
	}
	e.line(0, "limits:")
	for _, s := range lines {
		e.line(1, "%s", s)
	}
}

func (e *yamlWriter) store(s *Store) {
	e.line(0, "store:")
	if s.Memory {
		e.line(1, "memory: true # mosquitto's persistence false: nothing survives a restart")
		return
	}
	e.line(1, "data: %s # Roost's store is a directory, written at every change, not a mosquitto.db saved now and then", q(abs(s.Data)))
}

func (e *yamlWriter) auth(a *Auth) {
	e.line(0, "auth:")
	if a.AllowAnonymous != nil {
		e.line(1, "allow_anonymous: %v", *a.AllowAnonymous)
	}
	if a.PasswordFile != "" {
		e.line(1, "password_file: %s # the same mosquitto_passwd file", q(abs(a.PasswordFile)))
	}
	if a.ACLFile != "" {
		e.line(1, "acl_file: %s # the same mosquitto acl_file", q(abs(a.ACLFile)))
	}
	if a.CertIdentityAsUsername {
		e.line(1, "cert_identity_as_username: true")
	}
	if a.CheckRetainSource {
		e.line(1, "check_retain_source: true # as mosquitto's default: a retained message goes to new subscribers only while its publisher may still publish there")
	}
}

func (e *yamlWriter) bridges(bs []Bridge) {
	if len(bs) == 0 {
		return
	}
	e.line(0, "bridges:")
	for _, b := range bs {
		e.line(1, "- name: %s", q(b.Name))
		var addrs []string
		for _, a := range b.Addresses {
			addrs = append(addrs, q(a))
		}
		e.line(2, "addresses: [%s]", strings.Join(addrs, ", "))
		proto := map[packet.Version]string{packet.V31: "3.1", packet.V311: "3.1.1"}[b.Version]
		if proto == "" {
			proto = "5"
		}
		e.line(2, "protocol: %s", q(proto))
		if b.ClientID != "" {
			e.line(2, "client_id: %s", q(b.ClientID))
		}
		if b.LocalClientID != "" {
			e.line(2, "local_client_id: %s", q(b.LocalClientID))
		}
		e.line(2, "clean_start: %v", b.CleanStart)
		e.line(2, "local_clean_start: %v", b.LocalCleanStart)
		if b.SessionExpiry > 0 {
			e.line(2, "session_expiry: %s", dur(b.SessionExpiry))
		}
		if b.Username != "" {
			e.line(2, "username: %s", q(b.Username))
		}
		if b.Password != "" {
			e.line(2, "password: %s", q(b.Password))
		}
		e.bridgeTLS(&b.TLS)
		e.line(2, "keep_alive: %s", dur(b.KeepAlive))
		e.line(2, "backoff: {min: %s, max: %s} # mosquitto's restart_timeout", dur(b.BackoffMin), dur(b.BackoffMax))
		e.line(2, "try_private: %v", b.TryPrivate)
		e.line(2, "attempt_unsubscribe: %v", b.AttemptUnsubscribe)
		e.line(2, "outgoing_retain: %v", b.OutgoingRetain)
		if b.BindAddress != "" {
			e.line(2, "bind_address: %s", q(b.BindAddress))
		}
		if b.ReceiveMaximum > 0 {
			e.line(2, "receive_maximum: %d", b.ReceiveMaximum)
		}
		if b.RoundRobin {
			e.line(2, "round_robin: true")
		}
		if b.StartOnce {
			e.line(2, "start: once")
		}
		if b.StartLazy {
			e.line(2, "start: lazy")
			e.line(2, "threshold: %d", b.Threshold)
			e.line(2, "idle_timeout: %s", dur(b.IdleTimeout))
		}
		if b.ReloadLazy {
			e.line(2, "reload: lazy # mosquitto's bridge_reload_type default; Roost's is immediate")
		}
		if b.MaxPacketSize > 0 {
			e.line(2, "max_packet_size: %d", b.MaxPacketSize)
		}
		if k := b.TCPKeepAlive; k.Enable {
			e.line(2, "tcp_keepalive: {idle: %s, interval: %s, count: %d}", dur(k.Idle), dur(k.Interval), k.Count)
		}
		if b.TCPUserTimeout > 0 {
			e.line(2, "tcp_user_timeout: %s", dur(b.TCPUserTimeout))
		}
		e.line(2, "notifications: %v", b.Notifications)
		if b.NotificationsLocalOnly {
			e.line(2, "notifications_local_only: true")
		}
		if b.NotificationTopic != "" {
			e.line(2, "notification_topic: %s", q(b.NotificationTopic))
		}
		if !b.ClusterShared {
			e.line(2, "cluster_shared: false")
		}
		e.line(2, "topics:")
		for _, r := range b.Topics {
			e.line(3, "- %s", q(r.String()))
		}
	}
}

func (e *yamlWriter) bridgeTLS(t *BridgeTLS) {
	if t.CA == "" && t.CAPath == "" && t.Cert == "" && !t.Insecure && len(t.ALPN) == 0 && t.MinVersion == 0 && t.ServerName == "" && !t.OSCerts && !t.RequireOCSP {
		return
	}
	e.line(2, "tls:")
	if t.CA != "" {
		e.line(3, "ca: %s", q(abs(t.CA)))
	}
	if t.CAPath != "" {
		e.line(3, "capath: %s", q(abs(t.CAPath)))
	}
	if t.OSCerts {
		e.line(3, "os_certs: true")
	}
	if t.Cert != "" {
		e.line(3, "cert: %s", q(abs(t.Cert)))
		e.line(3, "key: %s", q(abs(t.Key)))
	}
	if len(t.ALPN) > 0 {
		var a []string
		for _, p := range t.ALPN {
			a = append(a, q(p))
		}
		e.line(3, "alpn: [%s]", strings.Join(a, ", "))
	}
	if t.ServerName != "" {
		e.line(3, "sni: %s", q(t.ServerName))
	}
	if t.Insecure {
		e.line(3, "insecure: true")
	}
	if t.RequireOCSP {
		e.line(3, "require_ocsp: true")
	}
	switch t.MinVersion {
	case tls.VersionTLS13:
		e.line(3, "min_version: \"1.3\"")
	case tls.VersionTLS11:
		e.line(3, "min_version: \"1.1\"")
	}
}

// listenerPolicy writes a listener's name, anonymous access, mount point,
// client ids and own auth files.
func (e *yamlWriter) listenerPolicy(l *Listener) {
	if l.Name != "" {
		e.line(2, "name: %s", q(l.Name))
	}
	if l.Anonymous != nil {
		e.line(2, "anonymous: %v # this listener's allow_anonymous (per_listener_settings true)", *l.Anonymous)
	}
	if l.MountPoint != "" {
		e.line(2, "mount_point: %s", q(l.MountPoint))
	}
	if l.Interface != "" {
		e.line(2, "interface: %s # bind_interface", q(l.Interface))
	}
	if l.UsernameAsClientID {
		e.line(2, "username_as_client_id: true # use_username_as_clientid")
	}
	if l.MaxQoS != nil {
		e.line(2, "max_qos: %d", *l.MaxQoS)
	}
	if l.TopicAliasMaximum != nil {
		e.line(2, "topic_alias_maximum: %d # this listener's max_topic_alias", *l.TopicAliasMaximum)
	}
	if l.ClientIDs != nil {
		e.line(2, "client_ids: # this listener's allow_zero_length_clientid and auto_id_prefix")
		e.clientIDs(3, l.ClientIDs)
	}
	if a := l.Auth; a != nil && *a == (ListenerAuth{}) {
		e.line(2, "auth: # per_listener_settings true, and no password_file or acl_file for this listener: every topic allowed")
	} else if a != nil {
		e.line(2, "auth: # per_listener_settings true: this listener's own files, not the top-level ones")
		if a.PasswordFile != "" {
			e.line(3, "password_file: %s", q(abs(a.PasswordFile)))
		}
		if a.ACLFile != "" {
			e.line(3, "acl_file: %s", q(abs(a.ACLFile)))
		}
	}
}

// clientIDs writes a client_ids section's keys at indent (the section
// itself at the top level, where it is written only when it is not the
// default).
func (e *yamlWriter) clientIDs(indent int, ids *ClientIDs) {
	if indent == 0 {
		if *ids == Default().ClientIDs {
			return
		}
		e.line(0, "client_ids:")
		indent = 1
	}
	e.line(indent, "allow_empty: %v", !ids.RefuseEmpty)
	if ids.Prefix != "" {
		e.line(indent, "prefix: %s", q(ids.Prefix))
	}
	if ids.RequiredPrefix != "" {
		e.line(indent, "required_prefix: %s # clientid_prefixes: other ids are refused (not authorized)", q(ids.RequiredPrefix))
	}
}
