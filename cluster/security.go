package cluster

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
)

// TLS names the files that secure the cluster port: this node's
// certificate and key, and the CA that signed every node's certificate.
// Routes are then mutual TLS: a node accepts a connection only from a
// certificate the CA signed for client authentication, and dials a peer
// only if it shows one the CA signed for server authentication.
//
// Host names are not checked: a node dials its peers through a bind proxy
// on loopback (engine.go), so the name NATS would check is 127.0.0.1,
// never the peer's. Every certificate the CA signed is a node, so the CA
// must be the cluster's own (docs/cluster.md says so).
type TLS struct {
	Cert string
	Key  string
	CA   string
}

// enabled reports whether any TLS file is named.
func (t *TLS) enabled() bool { return t.Cert != "" || t.Key != "" || t.CA != "" }

// check reports a half-given configuration.
func (t *TLS) check() error {
	if t.enabled() && (t.Cert == "" || t.Key == "" || t.CA == "") {
		return errors.New("cluster tls: cert, key and ca go together")
	}
	return nil
}

// config reads the files into the one tls.Config NATS uses for both ends
// of a route: as the accepting end it requires and verifies the peer's
// certificate; as the dialling end it verifies the peer in
// verifyRoutePeer, chain only (see TLS).
func (t *TLS) config() (*tls.Config, error) {
	kp, err := tls.LoadX509KeyPair(t.Cert, t.Key)
	if err != nil {
		return nil, fmt.Errorf("cluster tls: cert %s, key %s: %w", t.Cert, t.Key, err)
	}
	pem, err := os.ReadFile(t.CA)
	if err != nil {
		return nil, fmt.Errorf("cluster tls: ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("cluster tls: ca %s: no PEM certificate found", t.CA)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{kp},
		// Sent even when the peer's CA is another (Go would send
		// none), so that the peer logs the certificate it refused.
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &kp, nil },
		ClientAuth:           tls.RequireAndVerifyClientCert,
		ClientCAs:            pool,
		// Go's own check of a server certificate includes the host name,
		// which is the proxy's here; the chain is checked instead in
		// VerifyConnection, which runs whatever InsecureSkipVerify says.
		InsecureSkipVerify: true,
		VerifyConnection:   func(cs tls.ConnectionState) error { return verifyRoutePeer(cs, pool) },
		MinVersion:         tls.VersionTLS13,
	}, nil
}

// verifyRoutePeer checks the certificate of a route's other end. As the
// accepting end, Go has verified it already (RequireAndVerifyClientCert
// leaves its chains); as the dialling end, it must chain to the cluster CA
// and allow server authentication.
func verifyRoutePeer(cs tls.ConnectionState, roots *x509.CertPool) error {
	if len(cs.VerifiedChains) > 0 {
		return nil
	}
	if len(cs.PeerCertificates) == 0 {
		return errors.New("cluster tls: the peer sent no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		return fmt.Errorf("cluster tls: peer certificate %q: %w", cs.PeerCertificates[0].Subject.CommonName, err)
	}
	return nil
}

// routeUser is the user name of route authentication; the secret is what
// matters.
const routeUser = "roost"

// minSecret is the shortest secret accepted: 16 bytes of a password
// generator are beyond guessing over a network.
const minSecret = 16

// readSecret reads the shared secret of the cluster's nodes from path and
// returns the route password derived from it. The file holds the secret
// alone (surrounding white space is ignored). It warns when others than
// the owner may read the file.
func readSecret(path string, log *slog.Logger) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("cluster secret: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		log.Warn("cluster secret file is readable by others than its owner", "file", path, "mode", fi.Mode().Perm().String())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("cluster secret: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if len(s) < minSecret {
		return "", fmt.Errorf("cluster secret %s: %d bytes, want at least %d", path, len(s), minSecret)
	}
	return routePassword(s), nil
}

// routePassword derives the password routes present from the secret: hex,
// so it is safe in a route URL, never taken by NATS for a bcrypt hash, and
// not the secret itself.
func routePassword(secret string) string {
	h := sha256.Sum256([]byte("roost cluster route\x00" + secret))
	return hex.EncodeToString(h[:])
}

// isLoopback reports whether the cluster listens on a loopback address,
// which only this host can reach. listen was checked by Config.Check.
func isLoopback(listen string) bool {
	host, _, _ := net.SplitHostPort(listen)
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
