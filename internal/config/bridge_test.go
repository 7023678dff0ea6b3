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
	"github.com/roost-mqtt/roost/internal/devcert"
	"github.com/roost-mqtt/roost/packet"
)

// bridgeExample is the bridges section of docs/bridges.md, every key set.
const bridgeExample = `bridges:
  - name: cloud
    addresses: [mqtts://cloud.example.com:8883, mqtts://backup.example.com:8883]
    protocol: "3.1.1"
    client_id: edge-17
    local_client_id: bridge-cloud
    clean_start: false
    local_clean_start: false
    session_expiry: 24h
    username: edge-17
    password: s3cret
    tls: {ca: ca.pem, capath: certs, os_certs: true, cert: edge.pem, key: edge.key, alpn: [x-amzn-mqtt-ca], sni: cloud.example.com,
          require_ocsp: true, min_version: "1.1"}
    round_robin: true
    start: once
    reload: lazy
    max_packet_size: 1000
    tcp_keepalive: {idle: 30s, interval: 5s, count: 3}
    tcp_user_timeout: 20s
    keep_alive: 30s
    backoff: {min: 1s, max: 1m}
    try_private: false
    attempt_unsubscribe: false
    outgoing_retain: false
    bind_address: 10.0.0.5
    receive_maximum: 100
    notifications: true
    notifications_local_only: true
    notification_topic: bridges/cloud/up
    cluster_shared: false
    topics:
      - sensors/# out 1 edge/ site17/
      - "\"\" in 1 edge/cmd site17/cmd"
      - {pattern: "chat/#", direction: both, qos: 2}
      - {pattern: "", direction: out, local_prefix: a/b, remote_prefix: c/d}
`

func TestParseBridges(t *testing.T) {
	c, err := Parse("roost.yaml", []byte(bridgeExample))
	if err != nil {
		t.Fatal(err)
	}
	want := []Bridge{{
		Name: "cloud", Addresses: []string{"mqtts://cloud.example.com:8883", "mqtts://backup.example.com:8883"},
		Version: packet.V311, ClientID: "edge-17", LocalClientID: "bridge-cloud", SessionExpiry: 24 * time.Hour,
		Username: "edge-17", Password: "s3cret",
		TLS: BridgeTLS{CA: "ca.pem", CAPath: "certs", OSCerts: true, Cert: "edge.pem", Key: "edge.key", ALPN: []string{"x-amzn-mqtt-ca"}, ServerName: "cloud.example.com",
			RequireOCSP: true, MinVersion: tls.VersionTLS11},
		RoundRobin: true, StartOnce: true, ReloadLazy: true, Threshold: 10, IdleTimeout: time.Minute, MaxPacketSize: 1000, TCPUserTimeout: 20 * time.Second,
		TCPKeepAlive: net.KeepAliveConfig{Enable: true, Idle: 30 * time.Second, Interval: 5 * time.Second, Count: 3},
		KeepAlive:    30 * time.Second, BackoffMin: time.Second, BackoffMax: time.Minute,
		TryPrivate: false, AttemptUnsubscribe: false, OutgoingRetain: false, BindAddress: "10.0.0.5", ReceiveMaximum: 100, Notifications: true, NotificationsLocalOnly: true, NotificationTopic: "bridges/cloud/up",
		ClusterShared: false,
		Topics: []bridge.Rule{
			{Pattern: "sensors/#", Direction: bridge.Out, QoS: 1, LocalPrefix: "edge/", RemotePrefix: "site17/"},
			{Direction: bridge.In, QoS: 1, LocalPrefix: "edge/cmd", RemotePrefix: "site17/cmd"},
			{Pattern: "chat/#", Direction: bridge.Both, QoS: 2},
			{Direction: bridge.Out, LocalPrefix: "a/b", RemotePrefix: "c/d"},
		},
	}}
	if !reflect.DeepEqual(c.Bridges, want) {
		t.Fatalf("got  %+v\nwant %+v", c.Bridges, want)
	}
}

func TestBridgeDefaults(t *testing.T) {
	c, err := Parse("roost.yaml", []byte("bridges:\n  - {name: b, addresses: [mqtt://h:1883], topics: ['#']}\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultBridge()
	want.Name, want.Addresses = "b", []string{"mqtt://h:1883"}
	want.Topics = []bridge.Rule{{Pattern: "#", Direction: bridge.Out}}
	if !reflect.DeepEqual(c.Bridges, []Bridge{want}) {
		t.Fatalf("got %+v", c.Bridges)
	}
	if want.Version != packet.V5 || !want.TryPrivate || !want.AttemptUnsubscribe || !want.Notifications || want.KeepAlive != time.Minute {
		t.Fatalf("defaults changed: %+v", want)
	}
}

func TestBridgeErrors(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"bridges:\n  - {addresses: [mqtt://h], topics: ['#']}\n", "roost.yaml:2: bridges[0]: name is required"},
		{"bridges:\n  - {name: a, topics: ['#']}\n", "bridges[0]: addresses: at least one"},
		{"bridges:\n  - {name: a, addresses: [mqtt://h]}\n", "bridges[0]: topics: at least one"},
		{"bridges:\n  - {name: a, addresses: [http://h], topics: ['#']}\n", `bridges[0].addresses[0]: scheme "http"`},
		{"bridges:\n  - name: a\n    addresses: [mqtt://h]\n    topics: ['# sideways']\n", "roost.yaml:4: bridges[0].topics[0]: invalid bridge topic"},
		{"bridges:\n  - {name: a, addresses: [mqtt://h], topics: [{pattern: '', local_prefix: x}]}\n", "empty pattern needs both"},
		{"bridges:\n  - {name: a, addresses: [mqtt://h], topics: [{pattern: '#', qos: 3}]}\n", "qos: must be an integer from 0 to 2"},
		{"bridges:\n  - {name: a, addresses: [mqtt://h], topics: ['#'], protocol: 4}\n", "protocol: must be 3.1 or 3.1.1 or 5"},
		{"bridges:\n  - {name: a, addresses: [mqtt://h], topics: ['#'], start: later}\n", "start: must be automatic or once or lazy"},
		{"bridges:\n  - {name: a, addresses: [mqtt://h], topics: ['#'], threshold: 0}\n", "threshold"},
		{"bridges:\n  - {name: a, addresses: [mqtt://h], topics: ['#'], start: lazy, local_clean_start: true}\n", "start: lazy needs the local session kept"},
		{"bridges:\n  - {name: a, addresses: [mqtt://h], topics: ['#'], tcp_keepalive: {count: 0}}\n", "tcp_keepalive.count"},
		{"bridges:\n  - {name: a/b, addresses: [mqtt://h], topics: ['#']}\n", "name \"a/b\": use letters"},
		{"bridges:\n  - {name: a, addresses: [mqtt://h], topics: ['#'], bogus: 1}\n", `unknown key "bogus" in bridges[0]`},
		{"bridges:\n  - {name: a, addresses: [mqtt://h], topics: ['#'], tls: {cert: c.pem}}\n", "cert and key go together"},
		{"bridges:\n  - {name: a, addresses: [mqtt://h], topics: ['#']}\n  - {name: a, addresses: [mqtt://h], topics: ['#']}\n", `bridge name "a" used twice`},
		{"bridges:\n  - {name: a, addresses: [mqtt://h], topics: ['#'], keep_alive: 1s}\n", "keep_alive"},
		{"bridges:\n  - {name: a, addresses: [mqtt://h], topics: ['#'], bind_address: eth0}\n", "bind_address: must be an IP address"},
	} {
		_, err := Parse("roost.yaml", []byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error containing %q", tc.yaml, err, tc.want)
		}
	}
}

// TLS files are resolved against the configuration's directory and read
// by Options; a missing file is an error naming it.
func TestBridgeTLSFiles(t *testing.T) {
	dir := t.TempDir()
	ca, err := devcert.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "ca.pem"), ca.CertPEM())
	path := filepath.Join(dir, "roost.yaml")
	writeFile(t, path, []byte("bridges:\n  - {name: a, addresses: [mqtts://h:8883], topics: ['#'], tls: {ca: ca.pem, alpn: [mqtt]}}\n"))
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	o, err := c.Bridges[0].Options(nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.TLS.RootCAs == nil || !reflect.DeepEqual(o.TLS.NextProtos, []string{"mqtt"}) {
		t.Fatalf("tls config %+v", o.TLS)
	}
	// A CA directory, as mosquitto's capath.
	capath := filepath.Join(dir, "cas")
	if err := os.Mkdir(capath, 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(capath, "a.pem"), ca.CertPEM())
	c.Bridges[0].TLS.CA, c.Bridges[0].TLS.CAPath = "", capath
	if o, err := c.Bridges[0].Options(nil); err != nil || o.TLS.RootCAs == nil {
		t.Fatalf("capath: %v", err)
	}
	c.Bridges[0].TLS.CAPath = dir // holds roost.yaml and ca.pem: one CA found
	if _, err := c.Bridges[0].Options(nil); err != nil {
		t.Fatalf("capath with other files: %v", err)
	}
	c.Bridges[0].TLS.CAPath = t.TempDir()
	if _, err := c.Bridges[0].Options(nil); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("empty capath: %v", err)
	}
	c.Bridges[0].TLS.CAPath = ""
	c.Bridges[0].TLS.CA = filepath.Join(dir, "missing.pem")
	if _, err := c.Bridges[0].Options(nil); err == nil || !strings.Contains(err.Error(), "missing.pem") {
		t.Fatalf("missing CA: %v", err)
	}
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// cluster_shared defaults to true and reaches the bridge as Unshared.
func TestBridgeClusterShared(t *testing.T) {
	for _, tc := range []struct {
		line     string
		unshared bool
	}{{"", false}, {"    cluster_shared: true\n", false}, {"    cluster_shared: false\n", true}} {
		c, err := Parse("roost.yaml", []byte("bridges:\n  - name: up\n    addresses: [mqtt://127.0.0.1:1]\n    topics: ['#']\n"+tc.line))
		if err != nil {
			t.Fatal(err)
		}
		bc, err := c.Bridges[0].Options(nil)
		if err != nil || bc.Unshared != tc.unshared {
			t.Errorf("%q: Unshared %v (%v), want %v", tc.line, bc.Unshared, err, tc.unshared)
		}
	}
}
