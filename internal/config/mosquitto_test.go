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
		if !strings.Contains(out.String(), s) {
			t.Errorf("output lacks %q:\n%s", s, out.String())
		}
	}
	return out.String()
}
