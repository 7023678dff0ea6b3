package main

import (
	"context"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/devcert"
	"github.com/roost-mqtt/roost/internal/mosquittotest"
	"github.com/roost-mqtt/roost/listener"
)

// tlsFiles are PEM files for the TLS tests: a CA, a server certificate for
// 127.0.0.1 and localhost, one for another name, a client certificate, and
// a CA that signed none of them.
type tlsFiles struct {
	ca, otherCA                 string
	cert, key                   string // server, for 127.0.0.1 and localhost
	wrongNameCert, wrongNameKey string // server, for elsewhere.example only
	clientCert, clientKey       string // CN "car1"
}

func newTLSFiles(t *testing.T) *tlsFiles {
	t.Helper()
	dir := t.TempDir()
	f := &tlsFiles{}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	issue := func(ca *devcert.CA, l devcert.Leaf, name string) (string, string) {
		chain, key, err := ca.Issue(l)
		if err != nil {
			t.Fatal(err)
		}
		return write(name+".pem", chain), write(name+"-key.pem", key)
	}
	ca, err := devcert.NewCA("pubsub test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := devcert.NewCA("unrelated CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f.ca, f.otherCA = write("ca.pem", ca.CertPEM()), write("other-ca.pem", other.CertPEM())
	f.cert, f.key = issue(ca, devcert.Leaf{CommonName: "localhost", Hosts: []string{"localhost", "127.0.0.1"}}, "server")
	f.wrongNameCert, f.wrongNameKey = issue(ca, devcert.Leaf{CommonName: "elsewhere.example", Hosts: []string{"elsewhere.example"}}, "wrong-name")
	f.clientCert, f.clientKey = issue(ca, devcert.Leaf{CommonName: "car1", Client: true}, "client")
	// A --capath directory: the CA among files that are not certificates.
	if err := os.Mkdir(filepath.Join(dir, "capath"), 0o700); err != nil {
		t.Fatal(err)
	}
	write("capath/ca.pem", ca.CertPEM())
	write("capath/README", []byte("not a certificate"))
	return f
}

// roost pub and mosquitto_pub, given the same authentication and TLS
// flags against one mosquitto, succeed and fail alike and exit with the
// same status: a refused CONNECT exits with its reason code (5 for 3.1.1,
// 135 for MQTT 5), --cafile verifies the broker, --insecure skips only the
// host name check, and --cert/--key authenticate the client. roost pub
// also reaches the wss:// listener.
func TestAuthAndTLSFlagsMatchMosquittoPub(t *testing.T) {
	t.Parallel()
	f := newTLSFiles(t)
	passwd := filepath.Join(t.TempDir(), "passwd")
	if out, err := exec.Command(mosquittoTool(t, "mosquitto_passwd"), "-c", "-b", passwd, "car", "s3cret").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v: %s", err, out)
	}
	tlsListener := func(cert, key string, extra ...string) []string {
		return append([]string{"listener {port} 127.0.0.1", "cafile " + f.ca, "certfile " + cert, "keyfile " + key}, extra...)
	}
	lines := []string{"allow_anonymous false", "password_file " + passwd}
	lines = append(lines, tlsListener(f.cert, f.key)...)                                                              // Ports[0]
	lines = append(lines, tlsListener(f.wrongNameCert, f.wrongNameKey)...)                                            // Ports[1]
	lines = append(lines, tlsListener(f.cert, f.key, "require_certificate true", "use_identity_as_username true")...) // Ports[2]
	lines = append(lines, tlsListener(f.cert, f.key, "protocol websockets")...)                                       // Ports[3]
	b := mosquittotest.Start(t, lines...)
	port := func(i int) string { return strconv.Itoa(b.Ports[i]) }
	plain := strconv.Itoa(b.Port)

	cred := []string{"-u", "car", "-P", "s3cret"}
	tests := []struct {
		name string
		args []string
		code int
		both bool // mosquitto_pub takes the same flags
	}{
		{"anonymous, MQTT 5", []string{"-p", plain}, 135, true},
		{"anonymous, 3.1.1", []string{"-p", plain, "-V", "311"}, 5, true},
		{"wrong password", []string{"-p", plain, "-u", "car", "-P", "nope"}, 135, true},
		{"password", append([]string{"-p", plain}, cred...), 0, true},
		{"-L with credentials", []string{"-L", "mqtt://car:s3cret@127.0.0.1:" + plain + "/tls/x"}, 0, true},
		{"TLS by address", append([]string{"-p", port(0), "--cafile", f.ca}, cred...), 0, true},
		{"TLS by name", append([]string{"-h", "localhost", "-p", port(0), "--cafile", f.ca}, cred...), 0, true},
		{"-L mqtts://", []string{"-L", "mqtts://car:s3cret@localhost:" + port(0) + "/tls/x", "--cafile", f.ca}, 0, true},
		{"unknown CA", append([]string{"-p", port(0), "--cafile", f.otherCA}, cred...), 1, false}, // mosquitto_pub: 8
		{"wrong host name", append([]string{"-p", port(1), "--cafile", f.ca}, cred...), 1, false}, // mosquitto_pub: 8
		{"wrong host name, --insecure", append([]string{"-p", port(1), "--cafile", f.ca, "--insecure"}, cred...), 0, true},
		{"unknown CA, --insecure", append([]string{"-p", port(1), "--cafile", f.otherCA, "--insecure"}, cred...), 1, false},
		{"client certificate", []string{"-p", port(2), "--cafile", f.ca, "--cert", f.clientCert, "--key", f.clientKey}, 0, true},
		{"wss://", []string{"-L", "wss://car:s3cret@localhost:" + port(3) + "/tls/x", "--cafile", f.ca}, 0, false},
		{"--tls-version tlsv1.3", append([]string{"-p", port(0), "--cafile", f.ca, "--tls-version", "tlsv1.3"}, cred...), 0, true},
		{"--tls-version bogus", append([]string{"-p", port(0), "--cafile", f.ca, "--tls-version", "sslv3"}, cred...), 1, true},
		{"--capath", append([]string{"-p", port(0), "--capath", filepath.Join(filepath.Dir(f.ca), "capath")}, cred...), 0, false}, // mosquitto wants c_rehash names
		{"--tls-use-os-certs and --cafile", append([]string{"-p", port(0), "--cafile", f.ca, "--tls-use-os-certs"}, cred...), 0, true},
		{"--tls-use-os-certs alone", append([]string{"-p", port(0), "--tls-use-os-certs"}, cred...), 1, false}, // the test CA is not the system's
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"-h", "127.0.0.1", "-t", "tls/x", "-m", "hi", "-q", "1"}, tt.args...)
			code, _, stderr := runRoost(t, append([]string{"pub"}, args...)...)
			if code != tt.code {
				t.Errorf("roost pub: exit %d, want %d; stderr %q", code, tt.code, stderr)
			}
			if tt.code == 135 || tt.code == 5 {
				if !strings.Contains(stderr, "Connection error:") {
					t.Errorf("roost pub stderr %q, want Connection error: ...", stderr)
				}
			}
			if !tt.both {
				return
			}
			margs := args
			if !wants311(tt.args) {
				margs = append([]string{"-V", "mqttv5"}, args...)
			}
			if mcode, _, mstderr := runTool(t, "mosquitto_pub", margs...); mcode != code {
				t.Errorf("mosquitto_pub: exit %d, roost pub: exit %d; mosquitto stderr %q", mcode, code, mstderr)
			}
		})
	}
}

// --tls-alpn offers an ALPN protocol: a Roost listener that requires
// "mqtt" accepts it and refuses another.
func TestTLSALPN(t *testing.T) {
	t.Parallel()
	f := newTLSFiles(t)
	srv, err := broker.New(broker.Options{Logger: slog.New(slog.DiscardHandler), SysInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	m, err := listener.NewCertManager(listener.TLSOptions{Certs: []listener.KeyPair{{Cert: f.cert, Key: f.key}}, NextProtos: []string{"mqtt"}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(listener.TLS(ln, m))
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	for _, tt := range []struct {
		alpn string
		code int
	}{{"mqtt", 0}, {"x-other", 1}} {
		code, _, stderr := runRoost(t, "pub", "-h", "localhost", "-p", port, "--cafile", f.ca, "--tls-alpn", tt.alpn, "-t", "a", "-m", "b")
		if code != tt.code {
			t.Errorf("--tls-alpn %s: exit %d, want %d; %s", tt.alpn, code, tt.code, stderr)
		}
	}
}
