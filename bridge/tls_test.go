package bridge

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/devcert"
	"github.com/roost-mqtt/roost/internal/mosquittotest"
	"github.com/roost-mqtt/roost/packet"
)

// The bridge reaches a mosquitto that requires TLS with a client
// certificate, through its second address (the first refuses
// connections): failover, CA, client certificate and SNI (the server
// certificate names only "mqtt.test", the address is an IP).
func TestBridgeTLSFailover(t *testing.T) {
	dir := t.TempDir()
	ca, err := devcert.NewCA("bridge test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srvCert, srvKey, err := ca.Issue(devcert.Leaf{CommonName: "mqtt.test", Hosts: []string{"mqtt.test"}})
	if err != nil {
		t.Fatal(err)
	}
	cliCert, cliKey, err := ca.Issue(devcert.Leaf{CommonName: "edge-1", Client: true})
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"ca.pem": ca.CertPEM(), "server.pem": srvCert, "server.key": srvKey} {
		writeAtomic(t, filepath.Join(dir, name), data)
	}
	m := mosquittotest.Start(t,
		"listener {port} 127.0.0.1",
		"cafile "+filepath.Join(dir, "ca.pem"),
		"certfile "+filepath.Join(dir, "server.pem"),
		"keyfile "+filepath.Join(dir, "server.key"),
		"require_certificate true")
	tlsURL := fmt.Sprintf("mqtts://127.0.0.1:%d", m.Ports[0])

	// An address nothing listens on: a port just closed.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "mqtt://" + ln.Addr().String()
	ln.Close()

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM())
	kp, err := tls.X509KeyPair(cliCert, cliKey)
	if err != nil {
		t.Fatal(err)
	}
	srv, roostURL := startRoost(t)
	b := startBridge(t, srv, Config{Name: "tls", Addresses: []string{dead, tlsURL}, Version: packet.V311,
		TLS:    &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{kp}, ServerName: "mqtt.test"},
		Topics: []Rule{{Pattern: "t/#", Direction: Out, QoS: 1}}})
	var atMosq inbox
	subscribe(t, newClient(t, "mqtt://"+m.Addr, packet.V5, nil), "t/#", &atMosq)
	eventually(t, 15*time.Second, func() error {
		if st := b.Stats(); !st.Connected || st.Server != tlsURL {
			return fmt.Errorf("bridge %+v", st)
		}
		return nil
	})
	publish(t, newClient(t, roostURL, packet.V5, nil), "t/secure", "x", false)
	atMosq.waitFor(t, "t/secure")
}

func writeAtomic(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}
