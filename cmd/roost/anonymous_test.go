package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

var readyLines = regexp.MustCompile(`msg="listener ready" addr=\S+:(\d+) scheme=mqtt`)

// Anonymous access as docs/security.md's table says, with real clients:
// for each way to authenticate × auth.allow_anonymous unset, true, false
// (in the file or as --allow-anonymous) × a loopback or an all-interfaces
// listener, an anonymous paho.mqtt.golang client from this machine, and an
// anonymous client from another machine (a PROXY protocol header gives it
// the address 203.0.113.7), are accepted or refused, and the start-up log
// says so for each listener.
func TestServeAnonymousAccess(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	passwd := filepath.Join(dir, "passwd")
	writePasswords(t, passwd, "u", "p")
	// A hook that lets everyone in: anonymous clients must be refused
	// before it is asked.
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte(`{"allow":true}`))
	}))
	defer hook.Close()
	authBy := map[string]string{
		"nothing":  "",
		"passwd":   "  password_file: " + passwd + "\n",
		"http":     "  http_hook: {url: " + hook.URL + "}\n",
		"acl only": "  acl_file: " + writeConfig(t, "topic readwrite #\n") + "\n",
	}
	const (
		no    = "no"
		local = "from this machine only"
		yes   = "yes"
	)
	for _, tc := range []struct {
		auth, allow string // allow: "", "true" or "false" in the file
		host        string
		args        []string
		local       bool   // an anonymous client from this machine gets in
		remote      bool   // one from another machine does
		logged      string // accepted= in the start-up log
	}{
		{"nothing", "", "127.0.0.1", nil, true, false, local},
		{"nothing", "", "0.0.0.0", nil, true, false, local},
		{"nothing", "true", "127.0.0.1", nil, true, true, yes},
		{"nothing", "true", "0.0.0.0", nil, true, true, yes},
		{"nothing", "", "0.0.0.0", []string{"--allow-anonymous"}, true, true, yes},
		{"acl only", "", "0.0.0.0", nil, true, false, local},
		{"passwd", "", "127.0.0.1", nil, false, false, no},
		{"passwd", "", "0.0.0.0", nil, false, false, no},
		{"passwd", "true", "127.0.0.1", nil, true, true, yes},
		{"passwd", "true", "0.0.0.0", nil, true, true, yes},
		{"passwd", "false", "0.0.0.0", nil, false, false, no},
		{"passwd", "", "0.0.0.0", []string{"--allow-anonymous"}, true, true, yes},
		{"passwd", "true", "0.0.0.0", []string{"--allow-anonymous=false"}, false, false, no},
		{"http", "", "127.0.0.1", nil, false, false, no},
		{"http", "", "0.0.0.0", nil, false, false, no},
		{"http", "true", "0.0.0.0", nil, true, true, yes},
	} {
		name := fmt.Sprintf("auth by %s, allow_anonymous %q, %s %q", tc.auth, tc.allow, tc.host, tc.args)
		src := "listeners:\n  - url: mqtt://" + tc.host + ":0\n    name: plain\n" +
			"  - url: mqtt://" + tc.host + ":0\n    name: proxied\n    proxy_protocol: true\n"
		if a := authBy[tc.auth]; a != "" || tc.allow != "" {
			src += "auth:\n" + a
			if tc.allow != "" {
				src += "  allow_anonymous: " + tc.allow + "\n"
			}
		}
		b := startServe(t, append([]string{"--config", writeConfig(t, src), "--memory"}, tc.args...)...)
		// startServe returns at the first ready line; the second may
		// come a moment later (it had not at load 18).
		var ports [][]string
		if !eventually(t, 10*time.Second, func() bool {
			ports = readyLines.FindAllStringSubmatch(b.log.String(), -1)
			return len(ports) == 2
		}) {
			t.Fatalf("%s: want 2 listener ready lines; log:\n%s", name, b.log.String())
		}
		plain, proxied := "127.0.0.1:"+ports[0][1], "127.0.0.1:"+ports[1][1]
		if got := pahoAnonymous(plain); got != tc.local {
			t.Errorf("%s: anonymous client from this machine accepted=%v, want %v", name, got, tc.local)
		}
		if got := proxiedAnonymous(t, proxied, "203.0.113.7"); got != tc.remote {
			t.Errorf("%s: anonymous client from 203.0.113.7 accepted=%v, want %v", name, got, tc.remote)
		}
		if tc.auth == "passwd" && !proxiedUser(t, proxied, "203.0.113.7", "u", "p") {
			t.Errorf("%s: u with its password refused", name)
		}
		// A username nothing can check is no better than none.
		if tc.auth == "nothing" && proxiedUser(t, proxied, "203.0.113.7", "claimed", "x") != tc.remote {
			t.Errorf("%s: an unverifiable username from 203.0.113.7 is not treated as anonymous", name)
		}
		for _, ln := range []string{"plain", "proxied"} {
			want := fmt.Sprintf(`msg="anonymous clients" listener=%s accepted=%q why=`, ln, tc.logged)
			if tc.logged == yes || tc.logged == no {
				want = fmt.Sprintf(`msg="anonymous clients" listener=%s accepted=%s why=`, ln, tc.logged)
			}
			if !strings.Contains(b.log.String(), want) {
				t.Errorf("%s: no %s in the log:\n%s", name, want, b.log.String())
			}
		}
		if code := b.stop(); code != 0 {
			t.Errorf("%s: exit %d", name, code)
		}
	}
}

// The reported case of issue 13: a password file in the config file and
// the listener on the command line. The config's listener list, with its
// anonymous: false, is replaced; anonymous clients are refused all the same.
func TestServeListenFlagKeepsPasswordsRequired(t *testing.T) {
	t.Parallel()
	cfg := writeConfig(t, "listeners:\n  - url: mqtt://127.0.0.1:0\n    anonymous: false\nauth:\n  password_file: passwd\n")
	writePasswords(t, filepath.Join(filepath.Dir(cfg), "passwd"), "u", "p")
	b := startServe(t, "--config", cfg, "--listen", "mqtt://0.0.0.0:0", "--memory")
	_, port, _ := net.SplitHostPort(b.addr)
	addr := "127.0.0.1:" + port
	if pahoAnonymous(addr) {
		t.Error("anonymous client accepted")
	}
	if !pahoUser(addr, "u", "p") {
		t.Error("u with its password refused")
	}
	if !strings.Contains(b.log.String(), `msg="anonymous clients" listener=mqtt://0.0.0.0:0 accepted=no why="clients can authenticate (auth.password_file) and auth.allow_anonymous is not set`) {
		t.Errorf("start-up log does not say anonymous clients are refused:\n%s", b.log.String())
	}
}

// allow_anonymous: false with nothing that authenticates would refuse
// everyone: roost serve says so and does not start.
func TestServeAnonymousOffWithoutAuth(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--config", writeConfig(t, "auth:\n  allow_anonymous: false\n")},
		{"--allow-anonymous=false"},
	} {
		code, _, stderr := runCmd(t, append([]string{"serve"}, args...)...)
		if code != 2 || !strings.Contains(stderr, "anonymous access is off but nothing can authenticate clients") {
			t.Errorf("serve %q: exit %d, stderr:\n%s", args, code, stderr)
		}
	}
}

// pahoAnonymous reports whether paho.mqtt.golang connects to addr without
// a username.
func pahoAnonymous(addr string) bool { return pahoUser(addr, "", "") }

func pahoUser(addr, user, pass string) bool {
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("paho-anon").SetUsername(user).SetPassword(pass).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(mqtttest.AckBound)
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(mqtttest.AckBound + 5*time.Second) {
		return false
	}
	if tok.Error() != nil {
		return false
	}
	c.Disconnect(0)
	return true
}

// proxiedAnonymous connects through a PROXY protocol listener as if from
// remote and reports whether an anonymous MQTT 5 CONNECT is accepted.
func proxiedAnonymous(t *testing.T, addr, remote string) bool {
	return proxiedUser(t, addr, remote, "", "")
}

func proxiedUser(t *testing.T, addr, remote, user, pass string) bool {
	t.Helper()
	c := mqtttest.Dial(t, addr, packet.V5)
	defer c.NC.Close()
	fmt.Fprintf(c.NC, "PROXY TCP4 %s 127.0.0.1 40000 1883\r\n", remote)
	c.Send(&packet.Connect{ProtocolVersion: packet.V5, ClientID: "proxied", CleanStart: true,
		UsernameFlag: user != "", Username: user, PasswordFlag: pass != "", Password: []byte(pass)})
	ack, ok := c.Next(mqtttest.AckBound).(*packet.Connack) // 5 s ran out in a suite run at load 20
	if !ok {
		t.Fatalf("no CONNACK from %s", addr)
	}
	if ack.ReasonCode != 0 && ack.ReasonCode != packet.NotAuthorized {
		t.Errorf("CONNACK 0x%02X for %q from %s, want 0x00 or 0x87", byte(ack.ReasonCode), user, remote)
	}
	return ack.ReasonCode == 0
}

// Client certificates as identities count as a way to authenticate: with
// cert_identity_as_username and allow_anonymous unset, a TLS client
// without a certificate (anonymous) is refused and one with a certificate
// gets in; allow_anonymous: true lets the anonymous one in too. Real
// clients: paho.mqtt.golang over TLS.
func TestServeAnonymousWithCertIdentity(t *testing.T) {
	t.Parallel()
	f := newTLSFiles(t)
	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(f.ca)
	if err != nil || !pool.AppendCertsFromPEM(caPEM) {
		t.Fatalf("CA: %v", err)
	}
	clientCert, err := tls.LoadX509KeyPair(f.clientCert, f.clientKey)
	if err != nil {
		t.Fatal(err)
	}
	connect := func(addr string, cert bool) bool {
		cfg := &tls.Config{RootCAs: pool, ServerName: "localhost"}
		if cert {
			cfg.Certificates = []tls.Certificate{clientCert}
		}
		opts := mqtt.NewClientOptions().AddBroker("ssl://" + addr).SetClientID("paho-tls").SetTLSConfig(cfg).
			SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second)
		c := mqtt.NewClient(opts)
		tok := c.Connect()
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			return false
		}
		c.Disconnect(0)
		return true
	}
	for _, tc := range []struct {
		allow           string
		anonymous, cert bool
	}{
		{"", false, true},
		{"  allow_anonymous: true\n", true, true},
		{"  allow_anonymous: false\n", false, true},
	} {
		src := fmt.Sprintf("listeners:\n  - url: mqtts://127.0.0.1:0\n    tls: {cert: %s, key: %s, client_ca: %s, identity: cn}\n"+
			"auth:\n  cert_identity_as_username: true\n%s", f.cert, f.key, f.ca, tc.allow)
		b := startServe(t, "--config", writeConfig(t, src), "--memory")
		if got := connect(b.addr, false); got != tc.anonymous {
			t.Errorf("%q: TLS client without a certificate accepted=%v, want %v", tc.allow, got, tc.anonymous)
		}
		if got := connect(b.addr, true); got != tc.cert {
			t.Errorf("%q: TLS client with a certificate accepted=%v, want %v", tc.allow, got, tc.cert)
		}
		// Logged just after CONNACK.
		if !eventually(t, 5*time.Second, func() bool { return strings.Contains(b.log.String(), "username=car1") }) {
			t.Errorf("%q: the certificate's name is not the username; log:\n%s", tc.allow, b.log.String())
		}
		b.stop()
	}
}

// The quick start as it is, `roost serve` on all interfaces with nothing
// configured, seen from a real address of this machine that is not
// loopback: mosquitto_pub from there is refused with Not authorized, from
// 127.0.0.1 it gets in.
func TestServeDefaultRefusesOtherMachines(t *testing.T) {
	t.Parallel()
	mosquittoPub, err := exec.LookPath("mosquitto_pub")
	if err != nil {
		t.Skip("mosquitto_pub not installed (Debian mosquitto-clients)")
	}
	other := nonLoopbackAddr(t)
	b := startServe(t, "--listen", "mqtt://0.0.0.0:0", "--memory")
	_, port, _ := net.SplitHostPort(b.addr)
	pub := func(host string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, mosquittoPub, "-h", host, "-p", port, "-V", "mqttv5", "-t", "t", "-m", "x").CombinedOutput()
		return string(out), err
	}
	if out, err := pub("127.0.0.1"); err != nil {
		t.Errorf("from 127.0.0.1: %v: %s", err, out)
	}
	out, err := pub(other)
	if err == nil || !strings.Contains(strings.ToLower(out), "not authorized") {
		t.Errorf("from %s: %v: %s; want Not authorized", other, err, out)
	}
	if !eventually(t, 5*time.Second, func() bool {
		return strings.Contains(b.log.String(), "anonymous clients are accepted from the broker's own machine only")
	}) {
		t.Errorf("the refusal's reason is not logged:\n%s", b.log.String())
	}
}

// nonLoopbackAddr is an IPv4 address of this machine that is not loopback;
// the test is skipped on a machine without one.
func nonLoopbackAddr(t *testing.T) string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			return n.IP.String()
		}
	}
	t.Skip("no non-loopback IPv4 address on this machine")
	return ""
}
