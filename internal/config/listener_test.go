package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const listenersExample = `
listeners:
  - url: wss://0.0.0.0:443/mqtt
    name: public
    anonymous: false
    max_connections: 5000
    handshake_timeout: 5s
    tls:
      cert: fullchain.pem
      key: privkey.pem
      certs:
        - {cert: other.pem, key: other.key}
      client_ca: ca.pem
      require_client_cert: true
      identity: cn
      min_version: "1.3"
    ws:
      paths: [/mqtt, /ws]
      allowed_origins: [https://app.example.com]
      trusted_proxies: [127.0.0.1, 10.0.0.0/8]
  - url: mqtt://0.0.0.0:1883
    proxy_protocol: true
`

func TestParseListenerOptions(t *testing.T) {
	c, err := Parse("roost.yaml", []byte(listenersExample))
	if err != nil {
		t.Fatal(err)
	}
	want := []Listener{{
		URL: "wss://0.0.0.0:443/mqtt", Scheme: "wss", Addr: "0.0.0.0:443", Path: "/mqtt",
		ListenerOptions: ListenerOptions{
			Name: "public", Anonymous: new(false), MaxConnections: 5000, HandshakeTimeout: 5 * time.Second,
			TLS: TLS{
				Certs:    []KeyPair{{"fullchain.pem", "privkey.pem"}, {"other.pem", "other.key"}},
				ClientCA: "ca.pem", RequireClientCert: true, Identity: "cn", MinVersion: "1.3",
			},
			WS: WS{
				Paths:          []string{"/mqtt", "/ws"},
				AllowedOrigins: []string{"https://app.example.com"},
				TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("10.0.0.0/8")},
			},
		},
	}, {
		URL: "mqtt://0.0.0.0:1883", Scheme: "mqtt", Addr: "0.0.0.0:1883",
		ListenerOptions: ListenerOptions{ProxyProtocol: true, HandshakeTimeout: 10 * time.Second},
	}}
	if !reflect.DeepEqual(c.Listeners, want) {
		t.Errorf("got  %+v\nwant %+v", c.Listeners, want)
	}
	if got := c.Listeners[0].Paths(); !reflect.DeepEqual(got, []string{"/mqtt", "/ws"}) {
		t.Errorf("Paths() = %q", got)
	}
}

func TestListenerOptionErrors(t *testing.T) {
	tests := []struct{ src, want string }{
		{"listeners:\n  - url: mqtts://:8883\n", `roost.yaml:2: listeners[0]: mqtts:// needs a certificate: set tls.cert and tls.key (or --tls-cert and --tls-key)`},
		{"listeners:\n  - url: mqtt://:1883\n    tls: {cert: a, key: b}\n", `roost.yaml:2: listeners[0]: tls settings need an mqtts:// or wss:// url, not mqtt://`},
		{"listeners:\n  - url: mqtts://:8883\n    ws: {any_path: true}\n    tls: {cert: a, key: b}\n", `roost.yaml:2: listeners[0]: ws settings need a ws:// or wss:// url, not mqtts://`},
		{"listeners:\n  - url: wss://:443\n    tls: {cert: a}\n", `roost.yaml:3: listeners[0].tls: cert and key go together`},
		{"listeners:\n  - url: wss://:443\n    tls: {cert: a, key: b, identity: cn}\n", `roost.yaml:2: listeners[0]: tls.require_client_cert, tls.identity and tls.crl_file need tls.client_ca or tls.client_ca_path to verify client certificates with`},
		{"listeners:\n  - url: wss://:443\n    tls: {cert: a, key: b, identity: email}\n", `roost.yaml:3: listeners[0].tls.identity: must be cn or san or subject, got "email"`},
		{"listeners:\n  - url: wss://:443\n    tls: {cert: a, key: b, min_version: 1.0}\n", `roost.yaml:3: listeners[0].tls.min_version: must be 1.1 or 1.2 or 1.3, got "1.0"`},
		{"listeners:\n  - url: mqtts://:8883\n    tls: {cert: a, key: b, cipher_suites: [TLS_AES_128_GCM_SHA256]}\n", `listeners[0].tls.cipher_suites[0]: TLS_AES_128_GCM_SHA256 is a TLS 1.3 suite`},
		{"listeners:\n  - url: mqtts://:8883\n    tls: {cert: a, key: b, cipher_suites: [ECDHE-RSA-AES128-GCM-SHA256]}\n", `unknown cipher suite "ECDHE-RSA-AES128-GCM-SHA256"`},
		{"listeners:\n  - url: ws://:80\n    ws: {paths: [mqtt]}\n", `roost.yaml:3: listeners[0].ws.paths[0]: must start with /, got "mqtt"`},
		{"listeners:\n  - url: ws://:80\n    ws:\n      trusted_proxies: [10.0.0.0/33]\n", `roost.yaml:4: listeners[0].ws.trusted_proxies[0]: must be an address or CIDR such as 127.0.0.1 or 10.0.0.0/8, got "10.0.0.0/33"`},
		{"listeners:\n  - url: ws://:80\n    ws: {paths: /mqtt}\n", `roost.yaml:3: listeners[0].ws.paths: must be a list, got "/mqtt"`},
		{"listeners:\n  - url: mqtt://:1\n    proxy_protocol: yes\n", `roost.yaml:3: listeners[0].proxy_protocol: must be true or false, got "yes"`},
		{"listeners:\n  - url: mqtt://:1\n    max_connections: 0\n", `roost.yaml:3: listeners[0].max_connections: must be a positive integer, got "0"`},
	}
	for _, tt := range tests {
		_, err := Parse("roost.yaml", []byte(tt.src))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q:\n got %v\nwant %s", tt.src, err, tt.want)
		}
	}
}

// Relative certificate files in a config file are relative to that file.
func TestTLSPathsRelativeToConfigFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "roost.yaml")
	yaml := "listeners:\n  - url: mqtts://127.0.0.1:0\n    tls:\n      cert: certs/server.pem\n      key: /abs/server.key\n      client_ca: ca.pem\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(file)
	if err != nil {
		t.Fatal(err)
	}
	tl := c.Listeners[0].TLS
	if tl.Certs[0].Cert != filepath.Join(dir, "certs/server.pem") || tl.Certs[0].Key != "/abs/server.key" ||
		tl.ClientCA != filepath.Join(dir, "ca.pem") {
		t.Errorf("TLS paths = %+v", tl)
	}
}
