package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func TestCertDev(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "certs")
	code, stdout, stderr := runCmd(t, "cert", "dev", "--dir", dir, "--host", "mqtt.test")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"wrote a new CA", "NODE_EXTRA_CA_CERTS=" + dir + "/ca.pem", "--tls-cert " + dir + "/server.pem", "localhost, 127.0.0.1, ::1, mqtt.test"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	verify := func(names ...string) {
		t.Helper()
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(caPEM)
		for _, name := range names {
			if _, err := pair.Leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots}); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
	}
	verify("localhost", "127.0.0.1", "::1", "mqtt.test")
	if fi, _ := os.Stat(filepath.Join(dir, "ca-key.pem")); fi == nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("ca-key.pem mode %v, want 0600", fi)
	}

	// A second run keeps the CA, so it needs trusting only once.
	code, stdout, _ = runCmd(t, "cert", "dev", "--dir", dir)
	if code != 0 || !strings.Contains(stdout, "reused the CA") {
		t.Fatalf("second run: exit %d:\n%s", code, stdout)
	}
	if again, _ := os.ReadFile(filepath.Join(dir, "ca.pem")); !bytes.Equal(again, caPEM) {
		t.Error("the CA changed")
	}
	verify("localhost", "127.0.0.1", "::1")

	if code, _, stderr := runCmd(t, "cert"); code != 2 || !strings.Contains(stderr, "roost cert dev") {
		t.Errorf("roost cert: exit %d, %s", code, stderr)
	}
}

var wssReady = regexp.MustCompile(`msg="listener ready" addr=(\S+) scheme=wss`)

// roost serve with a wss:// listener and the certificate from roost cert
// dev: a WebSocket client trusting the dev CA connects over TLS and gets
// CONNACK; SIGHUP reloads the certificates.
func TestServeWSS(t *testing.T) {
	// Serial: it sends SIGHUP to the test process, which would reload every
	// serve running beside it.
	dir := t.TempDir()
	if code, _, stderr := runCmd(t, "cert", "dev", "--dir", dir); code != 0 {
		t.Fatal(stderr)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr syncBuffer
	exit := make(chan int, 1)
	go func() {
		exit <- run(ctx, []string{"serve", "--memory", "--listen", "wss://127.0.0.1:0/mqtt",
			"--tls-cert", dir + "/server.pem", "--tls-key", dir + "/server-key.pem"}, stdio{out: io.Discard, err: &stderr})
	}()
	var addr string
	if !eventually(t, 10*time.Second, func() bool {
		m := wssReady.FindStringSubmatch(stderr.String())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	}) {
		t.Fatalf("no listener ready line; log:\n%s", stderr.String())
	}

	caPEM, _ := os.ReadFile(dir + "/ca.pem")
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	d := websocket.Dialer{Subprotocols: []string{"mqtt"}, TLSClientConfig: &tls.Config{RootCAs: roots}, HandshakeTimeout: 5 * time.Second}
	ws, _, err := d.Dial("wss://"+strings.Replace(addr, "127.0.0.1", "localhost", 1)+"/mqtt", nil)
	if err != nil {
		t.Fatalf("dial: %v; log:\n%s", err, stderr.String())
	}
	defer ws.Close()
	connect := []byte{0x10, 16, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, 0, 4, 'w', 's', 's', '1'}
	ws.WriteMessage(websocket.BinaryMessage, connect)
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, msg, err := ws.ReadMessage(); err != nil || !bytes.Equal(msg, []byte{0x20, 2, 0, 0}) {
		t.Fatalf("CONNACK: % x, %v", msg, err)
	}

	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !eventually(t, 5*time.Second, func() bool { return strings.Contains(stderr.String(), `msg="certificates reloaded"`) }) {
		t.Errorf("no reload after SIGHUP; log:\n%s", stderr.String())
	}
	cancel()
	if code := <-exit; code != 0 {
		t.Errorf("exit %d; log:\n%s", code, stderr.String())
	}
}
