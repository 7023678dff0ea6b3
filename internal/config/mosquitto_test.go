package config

import (
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/bridge"
	"github.com/roost-mqtt/roost/packet"
)

const mosqExample = `# An edge broker
per_listener_settings false
listener 1883
listener 8883 127.0.0.1
certfile /etc/mosquitto/certs/server.pem
keyfile /etc/mosquitto/certs/server.key
cafile /etc/mosquitto/ca.pem
require_certificate true
use_identity_as_username true
tls_version tlsv1.3
listener 9001
protocol websockets
max_connections 500
allow_anonymous false
password_file /etc/mosquitto/passwd
acl_file /etc/mosquitto/acl
persistence true
persistence_location /var/lib/mosquitto/
autosave_interval 1800
max_inflight_messages 40
max_queued_messages 5000
max_queued_bytes 0
max_packet_size 65536
queue_qos0_messages true
retain_available true
sys_interval 30
log_dest syslog

connection cloud
address cloud.example.com:8883 backup.example.com
bridge_protocol_version mqttv50
remote_clientid edge-17
remote_username edge
remote_password s3cret
cleansession true
local_cleansession false
keepalive_interval 30
restart_timeout 2 60
try_private false
bridge_attempt_unsubscribe false
bridge_outgoing_retain false
bridge_bind_address 192.0.2.1
bridge_receive_maximum 50
bridge_tls_use_os_certs true
notifications false
bridge_cafile /etc/mosquitto/cloud-ca.pem
bridge_certfile /etc/mosquitto/edge.pem
bridge_keyfile /etc/mosquitto/edge.key
bridge_alpn x-amzn-mqtt-ca
round_robin true
start_type once
bridge_reload_type immediate
bridge_max_packet_size 10000
bridge_tcp_keepalive 30 5 4
bridge_tcp_user_timeout 60000
bridge_require_ocsp true
bridge_tls_version tlsv1.1
topic sensors/# out 1 edge/ site17/
topic "" in 2 edge/cmd site17/cmd

connection plain
address 10.0.0.2
topic # both
start_type lazy
threshold 5
idle_timeout 30
`

func TestParseMosquitto(t *testing.T) {
	if !IsMosquitto([]byte(mosqExample)) || IsMosquitto([]byte(example)) || IsMosquitto([]byte(bridgeExample)) {
		t.Fatal("IsMosquitto tells the formats apart wrongly")
	}
	// A key with a dot, as mosquitto has one, may come first.
	if !IsMosquitto([]byte("# TLS 1.3\nciphers_tls1.3 TLS_AES_128_GCM_SHA256\n")) {
		t.Error("a file starting with ciphers_tls1.3 was not taken for a mosquitto.conf")
	}
	c, err := ParseMosquitto("/etc/mosquitto/mosquitto.conf", []byte(mosqExample))
	if err != nil {
		t.Fatal(err)
	}
	var urls []string
	for _, l := range c.Listeners {
		urls = append(urls, l.URL)
	}
	if want := []string{"mqtt://:1883", "mqtts://127.0.0.1:8883", "ws://:9001"}; !reflect.DeepEqual(urls, want) {
		t.Errorf("listeners %v, want %v", urls, want)
	}
	tl := c.Listeners[1].TLS
	if !reflect.DeepEqual(tl, TLS{Certs: []KeyPair{{"/etc/mosquitto/certs/server.pem", "/etc/mosquitto/certs/server.key"}},
		ClientCA: "/etc/mosquitto/ca.pem", RequireClientCert: true, Identity: "cn", MinVersion: "1.3"}) {
		t.Errorf("TLS %+v", tl)
	}
	if c.Listeners[2].MaxConnections != 500 || c.Listeners[2].Path != "/mqtt" && c.Listeners[2].Path != "" {
		t.Errorf("websockets listener %+v", c.Listeners[2])
	}
	if c.Auth.AllowAnonymous == nil || *c.Auth.AllowAnonymous || c.Auth.PasswordFile != "/etc/mosquitto/passwd" || c.Auth.ACLFile != "/etc/mosquitto/acl" || !c.Auth.CertIdentityAsUsername {
		t.Errorf("auth %+v", c.Auth)
	}
	if c.Store.Memory || c.Store.Data != "/var/lib/mosquitto/" {
		t.Errorf("store %+v", c.Store)
	}
	l := c.Limits
	if l.MaxInflight != 40 || l.MaxQueued != 5000 || l.MaxQueuedBytes <= 1<<40 || l.MaxPacketSize != 65536 || !l.QueueQoS0 || !c.Retain || c.SysInterval != 30*time.Second {
		t.Errorf("limits %+v retain %v sys %v", l, c.Retain, c.SysInterval)
	}
	if len(c.Warnings) != 2 || !strings.Contains(c.Warnings[0], "mosquitto.conf:19: autosave_interval: ignored") ||
		!strings.Contains(c.Warnings[1], "log_dest") {
		t.Errorf("warnings %q", c.Warnings)
	}
	cloud := DefaultBridge()
	cloud.Name, cloud.Version, cloud.ClientID, cloud.Username, cloud.Password = "cloud", packet.V5, "edge-17", "edge", "s3cret"
	cloud.Addresses = []string{"mqtts://cloud.example.com:8883", "mqtts://backup.example.com:1883"}
	cloud.CleanStart, cloud.LocalCleanStart = true, false
	cloud.KeepAlive, cloud.BackoffMin, cloud.BackoffMax = 30*time.Second, 2*time.Second, time.Minute
	cloud.TryPrivate, cloud.AttemptUnsubscribe, cloud.Notifications = false, false, false
	cloud.OutgoingRetain, cloud.BindAddress, cloud.ReceiveMaximum = false, "192.0.2.1", 50
	cloud.TLS = BridgeTLS{OSCerts: true, CA: "/etc/mosquitto/cloud-ca.pem", Cert: "/etc/mosquitto/edge.pem", Key: "/etc/mosquitto/edge.key", ALPN: []string{"x-amzn-mqtt-ca"},
		RequireOCSP: true, MinVersion: tls.VersionTLS11}
	cloud.RoundRobin, cloud.StartOnce, cloud.MaxPacketSize, cloud.TCPUserTimeout = true, true, 10000, time.Minute
	cloud.TCPKeepAlive = net.KeepAliveConfig{Enable: true, Idle: 30 * time.Second, Interval: 5 * time.Second, Count: 4}
	cloud.Topics = []bridge.Rule{
		{Pattern: "sensors/#", Direction: bridge.Out, QoS: 1, LocalPrefix: "edge/", RemotePrefix: "site17/"},
		{Direction: bridge.In, QoS: 2, LocalPrefix: "edge/cmd", RemotePrefix: "site17/cmd"},
	}
	plain := DefaultBridge()
	plain.Name, plain.Version, plain.Addresses = "plain", packet.V311, []string{"mqtt://10.0.0.2:1883"}
	plain.Topics = []bridge.Rule{{Pattern: "#", Direction: bridge.Both}}
	plain.ReloadLazy = true // mosquitto's default
	plain.StartLazy, plain.Threshold, plain.IdleTimeout = true, 5, 30*time.Second
	if !reflect.DeepEqual(c.Bridges, []Bridge{cloud, plain}) {
		t.Errorf("bridges\n got  %+v\n want %+v", c.Bridges, []Bridge{cloud, plain})
	}
}

// Without listeners, mosquitto 2.0 listens on localhost only and allows
// anonymous clients; a bridge defaults to 3.1.1 with try_private and
// notifications, and its local session follows cleansession.
func TestParseMosquittoDefaults(t *testing.T) {
	c, err := ParseMosquitto("m.conf", []byte("connection b\naddress h\ntopic t\ncleansession true\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Listeners) != 1 || c.Listeners[0].URL != "mqtt://127.0.0.1:1883" || c.Auth.AllowAnonymous == nil || !*c.Auth.AllowAnonymous || !c.Store.Memory {
		t.Errorf("defaults: %+v anonymous %v memory %v", c.Listeners, c.Auth.AllowAnonymous, c.Store.Memory)
	}
	b := c.Bridges[0]
	if b.Version != packet.V311 || !b.TryPrivate || !b.Notifications || !b.CleanStart || !b.LocalCleanStart ||
		b.Topics[0] != (bridge.Rule{Pattern: "t", Direction: bridge.Out}) {
		t.Errorf("bridge %+v", b)
	}
	o, err := b.Options(nil)
	if err != nil || o.TLS.MinVersion != tls.VersionTLS12 {
		t.Errorf("options %+v %v", o, err)
	}
}

func TestParseMosquittoErrors(t *testing.T) {
	for _, tc := range []struct{ conf, want string }{
		{"listener 1883\nfoo_bar 1\n", `m.conf:2: unknown mosquitto option "foo_bar"`},
		{"psk_file /x\n", "m.conf:1: psk_file: not supported by Roost: Go's crypto/tls does not implement TLS-PSK"},
		{"topic # out\n", "m.conf:1: topic: only allowed after a connection line"},
		{"connection a\naddress h\ntopic # sideways\n", "m.conf:3: topic: invalid bridge topic"},
		{"connection a\naddress h\ntopic #\nbridge_psk 00\n", "m.conf:4: bridge_psk: not supported by Roost"},
		{"connection a\naddress h\ntopic #\nround_robin maybe\n", "m.conf:4: "},
		{"connection a\naddress h\ntopic #\nstart_type later\n", "m.conf:4: start_type: want automatic, lazy or once"},
		{"connection a\naddress h\ntopic #\nthreshold 0\n", "m.conf:4: "},
		{"connection a\naddress h\ntopic #\nstart_type lazy\ncleansession true\n", "connection a: start_type lazy needs local_cleansession false"},
		{"connection a\naddress h\ntopic #\nbridge_protocol_version mqttv4\n", "want mqttv31, mqttv311 or mqttv50"},
		{"connection a\naddress h\ntopic #\nbridge_tcp_keepalive 1 2\n", "m.conf:4: bridge_tcp_keepalive: want idle, interval and count"},
		{"connection a\naddress h\ntopic #\nbridge_reload_type soon\n", "m.conf:4: bridge_reload_type: want lazy or immediate"},
		{"connection a\naddress h\ntopic #\nbridge_require_ocsp true\n", "connection a: TLS options need bridge_cafile"},
		{"connection a/b\naddress h\ntopic #\n", "m.conf:1: connection: want one name"},
		{"connection a\naddress h\n", "connection a: needs an address and at least one topic"},
		{"connection a\naddress h\ntopic #\nbridge_certfile c\nbridge_keyfile k\n", "TLS options need bridge_cafile"},
		{"allow_anonymous yes\n", "m.conf:1: want true or false"},
		{"listener 1883\ncafile /ca.pem\n", "need certfile and keyfile"},
		{"connection a b\n", "connection: want one name"},
	} {
		_, err := ParseMosquitto("/etc/m.conf", []byte(tc.conf))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error containing %q", tc.conf, err, tc.want)
		}
	}
}

// include_dir reads the directory's .conf files in name order; Load tells
// a mosquitto file from YAML by its content; errors name the included file.
func TestMosquittoIncludeDir(t *testing.T) {
	dir := t.TempDir()
	inc := filepath.Join(dir, "conf.d")
	if err := os.Mkdir(inc, 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(inc, "b.conf"), []byte("connection two\naddress h2\ntopic b/#\n"))
	writeFile(t, filepath.Join(inc, "a.conf"), []byte("connection one\naddress h1\ntopic a/#\n"))
	writeFile(t, filepath.Join(inc, "ignored.txt"), []byte("not read\n"))
	main := filepath.Join(dir, "mosquitto.conf")
	writeFile(t, main, []byte("# mosquitto\nlistener 1883\nallow_anonymous true\ninclude_dir "+inc+"\n"))
	c, err := Load(main)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Bridges) != 2 || c.Bridges[0].Name != "one" || c.Bridges[1].Name != "two" {
		t.Fatalf("bridges %+v", c.Bridges)
	}
	writeFile(t, filepath.Join(inc, "c.conf"), []byte("\nbogus 1\n"))
	if _, err := Load(main); err == nil || !strings.Contains(err.Error(), `c.conf:2: unknown mosquitto option "bogus"`) {
		t.Fatalf("error in an included file: %v", err)
	}
}

// A mosquitto.conf converted to YAML parses back to the same configuration.
func TestConvertMosquitto(t *testing.T) {
	convertRoundTrip(t, mosqExample)
	out := convertRoundTrip(t, "connection b\naddress h\ntopic t in 2\ncleansession true\nsys_interval 0\nretain_available false\n")
	if !strings.Contains(out, "memory: true # mosquitto's persistence false") {
		t.Errorf("no memory store comment:\n%s", out)
	}
}

func convertRoundTrip(t *testing.T, conf string) string {
	t.Helper()
	want, err := ParseMosquitto("/etc/mosquitto/mosquitto.conf", []byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := want.WriteYAML(&out, "/etc/mosquitto/mosquitto.conf"); err != nil {
		t.Fatal(err)
	}
	got, err := Parse("roost.yaml", []byte(out.String()))
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	want.Warnings, want.Path = nil, ""
	for i := range want.Listeners {
		// A YAML listener's name defaults to its URL; compare the rest.
		got.Listeners[i].Name = want.Listeners[i].Name
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip differs\n got  %+v\n want %+v\nYAML:\n%s", got, want, out.String())
	}
	for _, s := range []string{"# Converted from /etc/mosquitto/mosquitto.conf", "restart_timeout"} {
		if !strings.Contains(out.String(), s) && (s != "restart_timeout" || strings.Contains(conf, "connection")) {
			t.Errorf("output lacks %q:\n%s", s, out.String())
		}
	}
	return out.String()
}

// The keys that change what the broker does for clients are read with
// mosquitto's meaning, per listener where per_listener_settings true says
// so, and survive roost config convert.
func TestMosquittoClientKeys(t *testing.T) {
	conf := `per_listener_settings true
max_keepalive 120
message_size_limit 1000
max_inflight_bytes 4096
persistent_client_expiration 2w
listener 1883 127.0.0.1
allow_anonymous true
allow_zero_length_clientid false
listener 1884 127.0.0.1
mount_point tenants/a/
password_file /etc/mosquitto/passwd
acl_file /etc/mosquitto/acl
auto_id_prefix t-
`
	c, err := ParseMosquitto("/etc/mosquitto/mosquitto.conf", []byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	l := c.Limits
	if l.MaxKeepAlive != 120 || l.MaxPayloadSize != 1000 || l.MaxInflightBytes != 4096 || l.PersistentSessionExpiry != 14*24*time.Hour {
		t.Errorf("limits %+v", l)
	}
	a, b := c.Listeners[0], c.Listeners[1]
	if a.Anonymous == nil || !*a.Anonymous || a.Auth == nil || *a.Auth != (ListenerAuth{}) || *a.ClientIDs != (ClientIDs{RefuseEmpty: true, Prefix: "auto-"}) {
		t.Errorf("first listener %+v", a.ListenerOptions)
	}
	if b.Anonymous == nil || *b.Anonymous || b.MountPoint != "tenants/a/" || *b.Auth != (ListenerAuth{PasswordFile: "/etc/mosquitto/passwd", ACLFile: "/etc/mosquitto/acl"}) ||
		*b.ClientIDs != (ClientIDs{Prefix: "t-"}) {
		t.Errorf("second listener %+v", b.ListenerOptions)
	}
	if c.Auth.PasswordFile != "" || c.Auth.ACLFile != "" || !c.Auth.CheckRetainSource {
		t.Errorf("per-listener files leaked to the top level, or check_retain_source is not on by default: %+v", c.Auth)
	}
	out := convertRoundTrip(t, conf)
	for _, s := range []string{"max_keepalive", "message_size_limit", "persistent_client_expiration", "per_listener_settings"} {
		if !strings.Contains(out, s) {
			t.Errorf("no comment about %s:\n%s", s, out)
		}
	}
	// Without per_listener_settings, the same keys are the server's.
	c, err = ParseMosquitto("m.conf", []byte("listener 1883\nallow_zero_length_clientid false\nauto_id_prefix x-\npassword_file /p\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.ClientIDs != (ClientIDs{RefuseEmpty: true, Prefix: "x-"}) || c.Auth.PasswordFile != "/p" || c.Listeners[0].Auth != nil {
		t.Errorf("global keys: %+v %+v", c.ClientIDs, c.Auth)
	}
}

func TestMosquittoClientKeyErrors(t *testing.T) {
	for _, tc := range []struct{ conf, want string }{
		{"allow_anonymous true\nper_listener_settings true\n", "m.conf:2: per_listener_settings must be set before any other security settings"},
		{"persistent_client_expiration 14\n", "m.conf:1: persistent_client_expiration: want a count and a unit"},
		{"persistent_client_expiration 3s\n", "persistent_client_expiration: want"},
		{"listener 1883\nmount_point a/#\n", "m.conf:2: mount_point: want a topic prefix without + or #"},
		{"max_keepalive 70000\n", "m.conf:1: want an integer from 0 to 65535"},
		{"message_size_limit -1\n", "want an integer from 0 to 268435455"},
	} {
		_, err := ParseMosquitto("/etc/m.conf", []byte(tc.conf))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error containing %q", tc.conf, err, tc.want)
		}
	}
}

// capath, ciphers (OpenSSL names to IANA ones), ciphers_tls1.3 (Go's
// three suites only), tls_version tlsv1.1 and use_subject_as_username are
// read into the listener's tls, and survive roost config convert.
func TestMosquittoTLSKeys(t *testing.T) {
	conf := `listener 8883 127.0.0.1
certfile /c.pem
keyfile /k.pem
capath /etc/mosquitto/ca_certificates
crlfile /etc/mosquitto/crl.pem
require_certificate true
use_subject_as_username true
ciphers ECDHE-RSA-AES128-GCM-SHA256:AES256-SHA
ciphers_tls1.3 TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256
tls_version tlsv1.1
`
	c, err := ParseMosquitto("m.conf", []byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	got := c.Listeners[0].TLS
	want := TLS{Certs: []KeyPair{{Cert: "/c.pem", Key: "/k.pem"}}, ClientCAPath: "/etc/mosquitto/ca_certificates", CRLFile: "/etc/mosquitto/crl.pem", RequireClientCert: true,
		Identity: "subject", MinVersion: "1.1", CipherSuites: []string{"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_RSA_WITH_AES_256_CBC_SHA"}}
	if !reflect.DeepEqual(got, want) || !c.Auth.CertIdentityAsUsername {
		t.Errorf("tls %+v\nwant %+v", got, want)
	}
	convertRoundTrip(t, conf)
	// use_identity_as_username wins, as in mosquitto.
	c, err = ParseMosquitto("m.conf", []byte(conf+"use_identity_as_username true\n"))
	if err != nil || c.Listeners[0].TLS.Identity != "cn" {
		t.Errorf("both: %v %+v", err, c)
	}
}

func TestMosquittoTLSKeyErrors(t *testing.T) {
	tlsListener := "listener 8883\ncertfile /c\nkeyfile /k\n"
	for _, tc := range []struct{ conf, want string }{
		{tlsListener + "ciphers ECDHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384\n", `m.conf:4: ciphers: cipher "DHE-RSA-AES256-GCM-SHA384": Roost takes the OpenSSL names`},
		{tlsListener + "ciphers HIGH:!aNULL\n", `ciphers: cipher "HIGH"`},
		{tlsListener + "ciphers_tls1.3 TLS_AES_256_GCM_SHA384\n", "m.conf:4: ciphers_tls1.3: Go's crypto/tls does not let the TLS 1.3 suites be chosen"},
		{tlsListener + "tls_version tlsv1\n", "tls_version: want tlsv1.1, tlsv1.2 or tlsv1.3"},
		{tlsListener + "cafile /ca\nuse_subject_as_username true\n", "use_identity_as_username and use_subject_as_username need require_certificate true"},
		{"listener 1883\ncapath /ca\n", "capath, require_certificate"},
		{"listener 1883\nciphers AES128-SHA\n", "need certfile and keyfile"},
	} {
		_, err := ParseMosquitto("/etc/m.conf", []byte(tc.conf))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error containing %q", tc.conf, err, tc.want)
		}
	}
}

// The other options of mosquitto.conf(5) for 2.0: honoured where Roost
// can (max_topic_alias, check_retain_source false, set_tcp_nodelay,
// allow_duplicate_messages), a warning where only mosquitto's
// implementation is concerned, an error naming the reason otherwise.
func TestMosquittoOtherKeys(t *testing.T) {
	conf := "listener 1883\nbind_interface eth0\nmax_qos 1\nuse_username_as_clientid true\nclientid_prefixes secure-\nmax_topic_alias 20\ncheck_retain_source false\nset_tcp_nodelay true\nallow_duplicate_messages true\n" +
		"set_tcp_nodelay false\ndhparamfile /dh.pem\nwebsockets_headers_size 4096\nauth_plugin_deny_special_chars true\n"
	c, err := ParseMosquitto("m.conf", []byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	if c.Auth.CheckRetainSource {
		t.Error("check_retain_source false was not read")
	}
	if a := c.Listeners[0].TopicAliasMaximum; a == nil || *a != 20 || c.Limits.TopicAliasMaximum != 10 {
		t.Errorf("topic alias maximum %v, default %d; want 20 and mosquitto's 10", a, c.Limits.TopicAliasMaximum)
	}
	if l := c.Listeners[0]; l.MaxQoS == nil || *l.MaxQoS != 1 || !l.UsernameAsClientID || c.ClientIDs.RequiredPrefix != "secure-" || l.Interface != "eth0" {
		t.Errorf("max_qos %v, use_username_as_clientid %v, clientid_prefixes %q", l.MaxQoS, l.UsernameAsClientID, c.ClientIDs.RequiredPrefix)
	}
	if len(c.Warnings) != 4 || !strings.Contains(c.Warnings[0], "m.conf:10: set_tcp_nodelay false") {
		t.Errorf("warnings %q", c.Warnings)
	}
	convertRoundTrip(t, conf)
	for _, tc := range []struct{ conf, want string }{
		{"listener 1\nmax_qos 3\n", "m.conf:2: want an integer from 0 to 2"},
		{"tls_engine pkcs11\n", "m.conf:1: tls_engine: not supported by Roost: OpenSSL engines"},
		{"auth_opt_db_host x\n", "m.conf:1: auth_opt_db_host: not supported by Roost: options of a mosquitto plugin"},
	} {
		_, err := ParseMosquitto("/etc/m.conf", []byte(tc.conf))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error containing %q", tc.conf, err, tc.want)
		}
	}
}
