package listener

import (
	"net/http"
	"net/netip"
	"testing"
)

func TestPickSubprotocol(t *testing.T) {
	tests := []struct {
		offered []string
		want    string
		ok      bool
	}{
		{nil, "", true},
		{[]string{"mqtt"}, "mqtt", true},
		{[]string{"mqttv3.1"}, "mqttv3.1", true},
		{[]string{"mqttv3.1", "mqtt"}, "mqttv3.1", true}, // the client's preference
		{[]string{"chat", "mqtt"}, "mqtt", true},
		{[]string{"MQTT"}, "MQTT", true}, // answered in the client's spelling
		{[]string{"chat"}, "", false},
		{[]string{"mqttv5", "wamp"}, "", false},
	}
	for _, tt := range tests {
		got, ok := pickSubprotocol(tt.offered)
		if got != tt.want || ok != tt.ok {
			t.Errorf("pickSubprotocol(%q) = %q, %v; want %q, %v", tt.offered, got, ok, tt.want, tt.ok)
		}
	}
}

func TestClientAddr(t *testing.T) {
	proxies := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	l := &wsListener{opts: WSOptions{TrustedProxies: proxies}}
	tests := []struct {
		name   string
		peer   string
		header http.Header
		want   string
	}{
		{"direct", "192.0.2.1:5000", nil, "192.0.2.1:5000"},
		{"untrusted peer's header ignored", "192.0.2.1:5000", http.Header{"X-Forwarded-For": {"198.51.100.9"}}, "192.0.2.1:5000"},
		{"trusted proxy", "10.1.2.3:5000", http.Header{"X-Forwarded-For": {"198.51.100.9"}}, "198.51.100.9:0"},
		{"trusted ipv6 proxy", "[::1]:5000", http.Header{"X-Real-Ip": {"2001:db8::5"}}, "[2001:db8::5]:0"},
		{"rightmost untrusted hop", "10.1.2.3:5000", http.Header{"X-Forwarded-For": {"6.6.6.6, 198.51.100.9, 10.9.9.9"}}, "198.51.100.9:0"},
		{"several header lines", "10.1.2.3:5000", http.Header{"X-Forwarded-For": {"6.6.6.6", "198.51.100.9"}}, "198.51.100.9:0"},
		{"hop with port", "10.1.2.3:5000", http.Header{"X-Forwarded-For": {"198.51.100.9:4444"}}, "198.51.100.9:0"},
		{"all hops trusted", "10.1.2.3:5000", http.Header{"X-Forwarded-For": {"10.5.5.5, 10.9.9.9"}}, "10.5.5.5:0"},
		{"garbage keeps the proxy", "10.1.2.3:5000", http.Header{"X-Forwarded-For": {"unknown"}}, "10.1.2.3:5000"},
		{"X-Real-IP", "10.1.2.3:5000", http.Header{"X-Real-Ip": {"198.51.100.9"}}, "198.51.100.9:0"},
		{"no header", "10.1.2.3:5000", nil, "10.1.2.3:5000"},
	}
	for _, tt := range tests {
		r := &http.Request{RemoteAddr: tt.peer, Header: tt.header}
		if got := l.clientAddr(r).String(); got != tt.want {
			t.Errorf("%s: got %s, want %s", tt.name, got, tt.want)
		}
	}
}

func TestOriginAllowed(t *testing.T) {
	allowed := []string{"https://app.example.com", "http://localhost:8080/"}
	for origin, want := range map[string]bool{
		"https://app.example.com": true,
		"HTTPS://APP.EXAMPLE.COM": true,
		"http://localhost:8080":   true,
		"https://evil.example":    false,
		"http://app.example.com":  false,
	} {
		if got := originAllowed(origin, allowed); got != want {
			t.Errorf("originAllowed(%q) = %v", origin, got)
		}
	}
	if !originAllowed("https://x", []string{"*"}) {
		t.Error("* must allow every origin")
	}
}
