package config

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/store"
)

// example is the documented example file (docs/config.md), every key set.
const example = `listeners:
  - url: mqtt://0.0.0.0:1883
  - url: mqtt://127.0.0.1:11883
    mount_point: tenants/a/
    client_ids: {allow_empty: false}
    auth: {password_file: tenants.pw, acl_file: /etc/roost/tenants.acl}
log: {level: debug, format: json}
limits:
  max_packet_size: 256KiB
  receive_maximum: 100
  max_inflight: 32
  max_queued: 5000
  max_queued_bytes: 16MiB
  expiry_sweep: 1m
  queue_qos0: true
  max_topic_levels: 16
  max_connections: 2000
  max_connections_per_ip: 50
  connect_rate_per_ip: 2.5
  max_subscriptions: 300
  publish_rate: 1000
  connect_timeout: 5s
  server_keep_alive: 120
  max_keep_alive: 300
  max_session_expiry: 86400
  topic_alias_maximum: 10
  max_retained: 50000
  max_retained_bytes: 256MiB
  max_payload_size: 64KiB
  max_inflight_bytes: 1MiB
  persistent_session_expiry: 336h
sys_interval: 1m
retain: false
auth:
  password_file: /etc/roost/passwd
  acl_file: acl
  allow_anonymous: false
  cert_identity_as_username: true
  http_hook: {url: "http://127.0.0.1:8080/auth", timeout: 1s, cache_ttl: 10s, fail_open: true, max_concurrent: 8}
client_ids: {prefix: auto-}
`

// tenantOptions are the options of the example's second listener.
func tenantOptions() ListenerOptions {
	o := DefaultListenerOptions()
	o.MountPoint = "tenants/a/"
	o.ClientIDs = &ClientIDs{RefuseEmpty: true}
	o.Auth = &ListenerAuth{PasswordFile: "tenants.pw", ACLFile: "/etc/roost/tenants.acl"}
	return o
}

func TestParseExample(t *testing.T) {
	c, err := Parse("roost.yaml", []byte(example))
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		Listeners: []Listener{
			{URL: "mqtt://0.0.0.0:1883", Scheme: "mqtt", Addr: "0.0.0.0:1883", ListenerOptions: DefaultListenerOptions()},
			{URL: "mqtt://127.0.0.1:11883", Scheme: "mqtt", Addr: "127.0.0.1:11883", ListenerOptions: tenantOptions()},
		},
		Log: Log{Level: slog.LevelDebug, Format: LogJSON},
		Limits: Limits{
			MaxPacketSize: 256 << 10, ReceiveMaximum: 100, MaxInflight: 32,
			MaxQueued: 5000, MaxQueuedBytes: 16 << 20, ExpirySweep: time.Minute, QueueQoS0: true, MaxTopicLevels: 16, MaxConnections: 2000,
			MaxConnectionsPerIP: 50, ConnectRatePerIP: 2.5, MaxSubscriptions: 300, PublishRate: 1000,
			ConnectTimeout: 5 * time.Second, ServerKeepAlive: 120, MaxKeepAlive: 300,
			MaxSessionExpiry: 86400, TopicAliasMaximum: 10,
			MaxRetained: 50000, MaxRetainedBytes: 256 << 20,
			MaxPayloadSize: 64 << 10, PersistentSessionExpiry: 14 * 24 * time.Hour, MaxInflightBytes: 1 << 20,
		},
		ClientIDs:   ClientIDs{Prefix: "auto-"},
		SysInterval: time.Minute,
		Retain:      false,
		Store:       Store{Data: DefaultDataDir, MinFree: store.DefaultMinFree, Ballast: store.DefaultBallast},
		Auth: Auth{PasswordFile: "/etc/roost/passwd", ACLFile: "acl", AllowAnonymous: new(false), CertIdentityAsUsername: true,
			HTTPHook: HTTPHook{URL: "http://127.0.0.1:8080/auth", Timeout: time.Second, CacheTTL: 10 * time.Second, FailOpen: true, MaxConcurrent: 8}},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got  %+v\nwant %+v", c, want)
	}
}

func TestDefaults(t *testing.T) {
	for _, src := range []string{"", "# nothing\n", "log:\nlimits:\n", "limits: {}\n"} {
		c, err := Parse("", []byte(src))
		if err != nil {
			t.Fatalf("%q: %v", src, err)
		}
		if !reflect.DeepEqual(c, Default()) {
			t.Errorf("%q: got %+v, want the defaults", src, c)
		}
	}
	d := Default()
	if len(d.Listeners) != 1 || d.Listeners[0].Addr != "0.0.0.0:1883" || d.Listeners[0].Scheme != "mqtt" {
		t.Errorf("default listeners = %+v, want mqtt on 0.0.0.0:1883", d.Listeners)
	}
	if d.Log != (Log{Level: slog.LevelInfo, Format: LogText}) || !d.Retain || d.SysInterval != 10*time.Second {
		t.Errorf("defaults = %+v", d)
	}
}

// The defaults must convert to exactly broker.DefaultOptions.
func TestDefaultBrokerOptions(t *testing.T) {
	got := Default().BrokerOptions(nil)
	want := broker.DefaultOptions()
	got.Logger, want.Logger = nil, nil
	// Not a setting of the file: zero is the broker's default (1 s), a
	// knob for tests of the graceful close.
	want.CloseLinger = 0
	if !reflect.DeepEqual(got, want) {
		t.Errorf("BrokerOptions = %+v\nwant %+v", got, want)
	}
}

func TestBrokerOptions(t *testing.T) {
	c, err := Parse("", []byte(example))
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)
	o := c.BrokerOptions(logger)
	want := broker.Options{
		Logger: logger, MaxPacketSize: 256 << 10, ReceiveMaximum: 100, MaxInflight: 32,
		MaxQueued: 5000, MaxQueuedBytes: 16 << 20, ExpirySweep: time.Minute, QueueQoS0: true, MaxTopicLevels: 16, MaxConnections: 2000,
		MaxConnectionsPerIP: 50, ConnectRatePerIP: 2.5, MaxSubscriptions: 300, PublishRate: 1000,
		ConnectTimeout: 5 * time.Second, ServerKeepAlive: 120, MaxKeepAlive: 300, MaxSessionExpiry: 86400,
		TopicAliasMaximum: 10, SysInterval: time.Minute, DisableRetain: true,
		MaxRetained: 50000, MaxRetainedBytes: 256 << 20,
		MaxPayloadSize: 64 << 10, PersistentSessionExpiry: 14 * 24 * 3600, AutoIDPrefix: "auto-", MaxInflightBytes: 1 << 20,
		Listeners: map[string]broker.ListenerPolicy{"mqtt://127.0.0.1:11883": {MountPoint: "tenants/a/", ClientIDs: true, RefuseEmptyClientID: true}},
	}
	if !reflect.DeepEqual(o, want) {
		t.Errorf("BrokerOptions = %+v\nwant %+v", o, want)
	}
}

func TestSysIntervalOff(t *testing.T) {
	for _, v := range []string{"0", "off", "0s"} {
		c, err := Parse("", []byte("sys_interval: "+v+"\n"))
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		if c.SysInterval != 0 {
			t.Errorf("%s: SysInterval = %v, want 0", v, c.SysInterval)
		}
		if got := c.BrokerOptions(nil).SysInterval; got >= 0 {
			t.Errorf("%s: broker SysInterval = %v, want negative (disabled)", v, got)
		}
	}
}

// max_retained and max_retained_bytes: 0 is unlimited, which broker.Options
// spells as a negative value; absent keys keep the broker's defaults.
func TestRetainedLimits(t *testing.T) {
	tests := []struct {
		src          string
		count, bytes int // in Config
		optN, optB   int // in broker.Options
	}{
		{"", 1000000, 1 << 30, 1000000, 1 << 30},
		{"limits: {max_retained: 0, max_retained_bytes: 0}", 0, 0, -1, -1},
		{"limits: {max_retained: 1, max_retained_bytes: 1}", 1, 1, 1, 1},
		{"limits: {max_retained: 2_000_000, max_retained_bytes: 4GiB}", 2000000, 4 << 30, 2000000, 4 << 30},
		{"limits: {max_retained_bytes: 1 KiB}", 1000000, 1024, 1000000, 1024},
	}
	for _, tt := range tests {
		c, err := Parse("", []byte(tt.src))
		if err != nil {
			t.Errorf("%q: %v", tt.src, err)
			continue
		}
		if c.Limits.MaxRetained != tt.count || c.Limits.MaxRetainedBytes != tt.bytes {
			t.Errorf("%q: config %d, %d; want %d, %d", tt.src, c.Limits.MaxRetained, c.Limits.MaxRetainedBytes, tt.count, tt.bytes)
		}
		o := c.BrokerOptions(nil)
		if o.MaxRetained != tt.optN || o.MaxRetainedBytes != tt.optB {
			t.Errorf("%q: options %d, %d; want %d, %d", tt.src, o.MaxRetained, o.MaxRetainedBytes, tt.optN, tt.optB)
		}
	}
}

func TestValues(t *testing.T) {
	tests := []struct {
		src  string
		get  func(*Config) any
		want any
	}{
		{"limits: {max_packet_size: 1048576}", maxPacket, uint32(1 << 20)},
		{"limits: {max_packet_size: 1MiB}", maxPacket, uint32(1 << 20)},
		{"limits: {max_packet_size: 64 KiB}", maxPacket, uint32(64 << 10)},
		{"limits: {max_packet_size: 268435460}", maxPacket, uint32(268435460)},
		{"limits: {max_queued: 1_000}", func(c *Config) any { return c.Limits.MaxQueued }, 1000},
		{"limits: {max_queued_bytes: 1GiB}", func(c *Config) any { return c.Limits.MaxQueuedBytes }, 1 << 30},
		{"limits: {expiry_sweep: off}", func(c *Config) any { return c.Limits.ExpirySweep }, time.Duration(-1)},
		{"limits: {server_keep_alive: 0}", func(c *Config) any { return c.Limits.ServerKeepAlive }, uint16(0)},
		{"limits: {max_session_expiry: 0}", func(c *Config) any { return c.Limits.MaxSessionExpiry }, uint32(0)},
		{"limits: {max_session_expiry: 4294967295}", func(c *Config) any { return c.Limits.MaxSessionExpiry }, uint32(1<<32 - 1)},
		{"limits: {connect_timeout: 1m30s}", func(c *Config) any { return c.Limits.ConnectTimeout }, 90 * time.Second},
		{"log: {level: WARN}", func(c *Config) any { return c.Log.Level }, slog.LevelWarn},
		{"log: {level: error}", func(c *Config) any { return c.Log.Level }, slog.LevelError},
		{"retain: true", func(c *Config) any { return c.Retain }, true},
		{"listeners: [{url: 'ws://0.0.0.0:8080'}]", firstListener, Listener{URL: "ws://0.0.0.0:8080", Scheme: "ws", Addr: "0.0.0.0:8080", Path: "/mqtt", ListenerOptions: DefaultListenerOptions()}},
		{"listeners: [{url: 'wss://h:443/ws', tls: {cert: c.pem, key: k.pem}}]", firstListener, Listener{URL: "wss://h:443/ws", Scheme: "wss", Addr: "h:443", Path: "/ws", ListenerOptions: withTLS("c.pem", "k.pem")}},
		{"listeners: [{url: 'mqtts://[::1]:0', tls: {cert: c.pem, key: k.pem}}]", firstListener, Listener{URL: "mqtts://[::1]:0", Scheme: "mqtts", Addr: "[::1]:0", ListenerOptions: withTLS("c.pem", "k.pem")}},
		{"listeners: [{url: 'mqtt://:1883/'}]", firstListener, Listener{URL: "mqtt://:1883/", Scheme: "mqtt", Addr: ":1883", ListenerOptions: DefaultListenerOptions()}},
		{"limits: &lim {max_queued: 7}\n", func(c *Config) any { return c.Limits.MaxQueued }, 7},
	}
	for _, tt := range tests {
		c, err := Parse("", []byte(tt.src))
		if err != nil {
			t.Errorf("%s: %v", tt.src, err)
			continue
		}
		if got := tt.get(c); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: got %#v, want %#v", tt.src, got, tt.want)
		}
	}
}

func withTLS(cert, key string) ListenerOptions {
	o := DefaultListenerOptions()
	o.TLS.Certs = []KeyPair{{cert, key}}
	return o
}

func maxPacket(c *Config) any     { return c.Limits.MaxPacketSize }
func firstListener(c *Config) any { return c.Listeners[0] }

// Every error names the file, the line and the key path.
func TestErrors(t *testing.T) {
	tests := []struct {
		src  string
		want string // the whole message
	}{
		// unknown and repeated keys
		{"listeners:\n  - url: mqtt://0.0.0.0:1883\nlimits:\n  max_queued: 10\n\n\n  max_packet_sise: 1MiB\n",
			`roost.yaml:7: unknown key "max_packet_sise" in limits`},
		{"retian: true\n", `roost.yaml:1: unknown key "retian"`},
		{"log:\n  level: info\n  colour: red\n", `roost.yaml:3: unknown key "colour" in log`},
		{"listeners:\n  - url: mqtt://a:1\n    tls_cert: x\n", `roost.yaml:3: unknown key "tls_cert" in listeners[0]`},
		{"retain: true\nretain: false\n", `roost.yaml:2: retain: key repeated`},
		{"? [a]\n: 1\n", `roost.yaml:1: the top level: keys must be plain words, got a list`},
		// shapes
		{"- a\n- b\n", `roost.yaml:1: the top level: must be a mapping of keys to values, got a list`},
		{"limits: 5\n", `roost.yaml:1: limits: must be a mapping of keys to values, got "5"`},
		{"log: [info]\n", `roost.yaml:1: log: must be a mapping of keys to values, got a list`},
		// listeners
		{"# comment\n\nlisteners:\n  - url: ftp://0.0.0.0:21\n",
			`roost.yaml:4: listeners[0].url: unsupported scheme "ftp" (want mqtt, mqtts, ws, wss)`},
		{"listeners:\n  - url: mqtt://a:1\n  - url: ftp://b:2\n",
			`roost.yaml:3: listeners[1].url: unsupported scheme "ftp" (want mqtt, mqtts, ws, wss)`},
		{"listeners: []\n", `roost.yaml:1: listeners: at least one listener is required`},
		{"listeners: mqtt://0.0.0.0:1883\n", `roost.yaml:1: listeners: must be a list of {url: ...} entries, got "mqtt://0.0.0.0:1883"`},
		{"listeners:\n  - mqtt://0.0.0.0:1883\n", `roost.yaml:2: listeners[0]: must be a mapping such as {url: mqtt://0.0.0.0:1883}, got "mqtt://0.0.0.0:1883"`},
		{"listeners:\n  - {}\n", `roost.yaml:2: listeners[0]: missing key "url"`},
		{"listeners:\n  - url:\n", `roost.yaml:2: listeners[0].url: must be a URL such as mqtt://0.0.0.0:1883, got no value`},
		{"listeners:\n  - url: 0.0.0.0:1883\n", `roost.yaml:2: listeners[0].url: "0.0.0.0:1883" is not a URL: want SCHEME://HOST:PORT, e.g. mqtt://0.0.0.0:1883`},
		{"listeners:\n  - url: mqtt://localhost\n", `roost.yaml:2: listeners[0].url: "mqtt://localhost": missing port, e.g. mqtt://localhost:1883`},
		{"listeners:\n  - url: mqtt://h:99999\n", `roost.yaml:2: listeners[0].url: "mqtt://h:99999": port "99999" is not a number from 0 to 65535`},
		{"listeners:\n  - url: mqtt://h:1/mqtt\n", `roost.yaml:2: listeners[0].url: "mqtt://h:1/mqtt": a path is only allowed for ws and wss`},
		{"listeners:\n  - url: mqtt://u:p@h:1\n", `roost.yaml:2: listeners[0].url: "mqtt://u:p@h:1": only SCHEME://HOST:PORT[/PATH] is allowed`},
		// log
		{"log:\n  level: verbose\n", `roost.yaml:2: log.level: must be one of debug, info, warn, error, got "verbose"`},
		{"log:\n  format: xml\n", `roost.yaml:2: log.format: must be text or json, got "xml"`},
		{"log: {level: [a]}\n", `roost.yaml:1: log.level: must be one of debug, info, warn, error, got a list`},
		// limits: integers
		{"limits:\n  max_queued: lots\n", `roost.yaml:2: limits.max_queued: must be a positive integer, got "lots"`},
		{"limits:\n  max_queued: 0\n", `roost.yaml:2: limits.max_queued: must be a positive integer, got "0"`},
		{"limits:\n  max_queued: -5\n", `roost.yaml:2: limits.max_queued: must be a positive integer, got "-5"`},
		{"limits:\n  max_queued: 1.5\n", `roost.yaml:2: limits.max_queued: must be a positive integer, got "1.5"`},
		{"limits:\n  max_queued:\n", `roost.yaml:2: limits.max_queued: must be a positive integer, got no value`},
		{"limits:\n  max_queued: 99999999999\n", `roost.yaml:2: limits.max_queued: must be a positive integer, got "99999999999"`},
		{"limits:\n  max_topic_levels: 0\n", `roost.yaml:2: limits.max_topic_levels: must be a positive integer, got "0"`},
		{"limits:\n  max_connections: many\n", `roost.yaml:2: limits.max_connections: must be a positive integer, got "many"`},
		{"limits:\n  publish_rate: -1\n", `roost.yaml:2: limits.publish_rate: must be a number per second >= 0 (0: unlimited), got "-1"`},
		{"limits:\n  receive_maximum: 0\n", `roost.yaml:2: limits.receive_maximum: must be an integer from 1 to 65535, got "0"`},
		{"limits:\n  max_inflight: 65536\n", `roost.yaml:2: limits.max_inflight: must be an integer from 1 to 65535, got "65536"`},
		{"limits:\n  server_keep_alive: -1\n", `roost.yaml:2: limits.server_keep_alive: must be an integer from 0 to 65535, got "-1"`},
		{"limits:\n  server_keep_alive: 120\n  max_keep_alive: 60\n", `roost.yaml:2: limits: server_keep_alive 120 is above max_keep_alive 60`},
		{"limits:\n  topic_alias_maximum: 0\n", `roost.yaml:2: limits.topic_alias_maximum: must be an integer from 1 to 65535, got "0"`},
		{"limits:\n  max_session_expiry: 4294967296\n", `roost.yaml:2: limits.max_session_expiry: must be an integer from 0 to 4294967295, got "4294967296"`},
		{"limits:\n  max_session_expiry: \"60\"\n", `roost.yaml:2: limits.max_session_expiry: must be an integer from 0 to 4294967295, got "60"`},
		{"limits:\n  max_retained: -1\n", `roost.yaml:2: limits.max_retained: must be an integer from 0 to 2147483647, got "-1"`},
		{"limits:\n  max_retained: lots\n", `roost.yaml:2: limits.max_retained: must be an integer from 0 to 2147483647, got "lots"`},
		{"limits:\n  max_retained: 1e6\n", `roost.yaml:2: limits.max_retained: must be an integer from 0 to 2147483647, got "1e6"`},
		{"limits:\n  max_retained: 3000000000\n", `roost.yaml:2: limits.max_retained: must be an integer from 0 to 2147483647, got "3000000000"`},
		{"limits:\n  max_retained_bytes: -1\n", `roost.yaml:2: limits.max_retained_bytes: must be a size such as 65536, 512KiB or 1MiB, got "-1"`},
		{"limits:\n  max_retained_bytes: 1GB\n", `roost.yaml:2: limits.max_retained_bytes: must be a size such as 65536, 512KiB or 1MiB, got "1GB"`},
		{"limits:\n  max_retained_bytes: 99999999999GiB\n", `roost.yaml:2: limits.max_retained_bytes: must be from 0 to 9223372036854775807 bytes, got "99999999999GiB"`},
		{"limits:\n  max_retained_byte: 1GiB\n", `roost.yaml:2: unknown key "max_retained_byte" in limits`},
		// limits: sizes
		{"limits:\n  max_packet_size: 1MB\n", `roost.yaml:2: limits.max_packet_size: must be a size such as 65536, 512KiB or 1MiB, got "1MB"`},
		{"limits:\n  max_packet_size: 0\n", `roost.yaml:2: limits.max_packet_size: must be from 1 byte to 268435460 bytes, got "0"`},
		{"limits:\n  max_queued_bytes: 0\n", `roost.yaml:2: limits.max_queued_bytes: must be from 1 byte to 9223372036854775807 bytes, got "0"`},
		{"limits:\n  max_queued_bytes: 1TiB\n", `roost.yaml:2: limits.max_queued_bytes: must be a size such as 65536, 512KiB or 1MiB, got "1TiB"`},
		{"limits:\n  expiry_sweep: 0s\n", `roost.yaml:2: limits.expiry_sweep: must be a positive duration such as 10s, got "0s"`},
		{"limits:\n  max_packet_size: 257MiB\n", `roost.yaml:2: limits.max_packet_size: must be from 1 byte to 268435460 bytes, got "257MiB"`},
		{"limits:\n  max_packet_size: 99999999999999999MiB\n", `roost.yaml:2: limits.max_packet_size: must be from 1 byte to 268435460 bytes, got "99999999999999999MiB"`},
		{"limits:\n  max_packet_size: -1\n", `roost.yaml:2: limits.max_packet_size: must be a size such as 65536, 512KiB or 1MiB, got "-1"`},
		// durations and booleans
		{"limits:\n  connect_timeout: 10\n", `roost.yaml:2: limits.connect_timeout: must be a duration such as 10s or 1m30s, got "10"`},
		{"limits:\n  connect_timeout: 0s\n", `roost.yaml:2: limits.connect_timeout: must be a positive duration such as 10s, got "0s"`},
		{"sys_interval: -1s\n", `roost.yaml:1: sys_interval: must not be negative, got "-1s"`},
		{"sys_interval: never\n", `roost.yaml:1: sys_interval: must be a duration such as 10s or 1m30s, got "never"`},
		{"retain: yes\n", `roost.yaml:1: retain: must be true or false, got "yes"`},
		{"limits: {queue_qos0: 1}\n", `roost.yaml:1: limits.queue_qos0: must be true or false, got "1"`},
		// the file itself
		{"limits:\n  max_queued: 1\n x: y\n", `roost.yaml:2: did not find expected key`},
		{"retain: true\n---\nretain: false\n", `roost.yaml:2: only one YAML document is allowed`},
	}
	for _, tt := range tests {
		_, err := Parse("roost.yaml", []byte(tt.src))
		if err == nil {
			t.Errorf("%q: no error, want %s", tt.src, tt.want)
			continue
		}
		if err.Error() != tt.want {
			t.Errorf("%q:\n got %s\nwant %s", tt.src, err, tt.want)
		}
		var e *Error
		if !errors.As(err, &e) || e.Line == 0 {
			t.Errorf("%q: %v is not an *Error with a line", tt.src, err)
		}
	}
}

// Without a file name the line still leads, as in the design note.
func TestErrorWithoutFile(t *testing.T) {
	src := strings.Repeat("\n", 6) + "limits:\n\n  max_queued: lots\n"
	_, err := Parse("", []byte(src))
	want := `line 9: limits.max_queued: must be a positive integer, got "lots"`
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}

// All problems are reported, in file order.
func TestSeveralErrors(t *testing.T) {
	src := "limits:\n  max_queued: lots\n  max_inflight: 0\nretain: maybe\nwat: 1\n"
	_, err := Parse("r.yaml", []byte(src))
	if err == nil {
		t.Fatal("no error")
	}
	lines := strings.Split(err.Error(), "\n")
	want := []string{"r.yaml:2: limits.max_queued", "r.yaml:3: limits.max_inflight", "r.yaml:4: retain", `r.yaml:5: unknown key "wat"`}
	if len(lines) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(lines), len(want), err)
	}
	for i := range want {
		if !strings.HasPrefix(lines[i], want[i]) {
			t.Errorf("error %d = %q, want prefix %q", i, lines[i], want[i])
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "roost.yaml")
	if err := os.WriteFile(path, []byte("log:\n  level: loud\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	if want := `roost.yaml:2: log.level: must be one of debug, info, warn, error, got "loud"`; err == nil || err.Error() != want {
		t.Errorf("Load = %v, want %s", err, want)
	}
	_, err = Load(filepath.Join(dir, "missing.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want ErrNotExist", err)
	}
}

func TestParseListener(t *testing.T) {
	good := map[string]string{
		"mqtt://127.0.0.1:0":    "127.0.0.1:0",
		"MQTT://localhost:1883": "localhost:1883",
		"mqtt://[::]:1883":      "[::]:1883",
	}
	for raw, addr := range good {
		ln, err := ParseListener(raw)
		if err != nil || ln.Addr != addr || ln.Scheme != "mqtt" {
			t.Errorf("ParseListener(%q) = %+v, %v; want addr %s", raw, ln, err, addr)
		}
	}
	for _, raw := range []string{"", "1883", "tcp://h:1", "mqtt://h", "mqtt://h:x", "mqtt://h:1?a=b", "mqtt://h:1#f", "mqtt://%zz:1"} {
		if ln, err := ParseListener(raw); err == nil {
			t.Errorf("ParseListener(%q) = %+v, want an error", raw, ln)
		}
	}
}

func TestAuthSection(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "roost.yaml")
	os.WriteFile(path, []byte("auth: {password_file: passwd, acl_file: /abs/acl, http_hook: {url: http://h/, cache_ttl: off}}\n"), 0o600)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if a := c.Auth; a.PasswordFile != filepath.Join(dir, "passwd") || a.ACLFile != "/abs/acl" || a.AllowAnonymous != nil || !a.HTTPHook.NoCache || !a.Enabled() {
		t.Errorf("auth: %+v", a)
	}
	for _, tc := range []struct{ src, want string }{
		{"auth: {allow_anonymous: maybe}\n", `line 1: auth.allow_anonymous: must be true or false, got "maybe"`},
		{"auth: {acl: x}\n", `line 1: unknown key "acl" in auth`},
		{"auth:\n  http_hook: {timeout: 1s}\n", `line 2: auth.http_hook: missing key "url"`},
		{"auth:\n  http_hook: {url: ftp://x}\n", `line 2: auth.http_hook.url: must be an http:// or https:// URL, got "ftp://x"`},
		{"auth:\n  password_file: \"\"\n", `line 2: auth.password_file: must not be empty`},
		{"auth:\n  http_hook: {url: http://h/, max_concurrent: 0}\n", `line 2: auth.http_hook.max_concurrent: must be an integer from 1 to 4096, got "0"`},
		{"auth:\n  http_hook: {url: http://h/, max_concurrent: many}\n", `line 2: auth.http_hook.max_concurrent: must be an integer from 1 to 4096, got "many"`},
		{"auth:\n  http_hook: {url: http://h/, max_concurrent: 4097}\n", `line 2: auth.http_hook.max_concurrent: must be an integer from 1 to 4096, got "4097"`},
	} {
		_, err := Parse("", []byte(tc.src))
		if err == nil || err.Error() != tc.want {
			t.Errorf("%q: %v, want %s", tc.src, err, tc.want)
		}
	}
}
