package listener

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// KeyPair names a PEM certificate chain file (leaf first, then the
// intermediates) and its private key file.
type KeyPair struct {
	Cert, Key string
}

// Identity says which part of a verified client certificate names the
// client.
type Identity int

// The identities.
const (
	IdentityNone Identity = iota // the certificate names nobody
	IdentityCN                   // the subject's Common Name
	IdentitySAN                  // the first DNS, email or URI Subject Alternative Name
	// IdentitySubject is the whole subject in RFC 2253 form, as in
	// "CN=test client,OU=Production,O=Server,C=GB" (mosquitto's
	// use_subject_as_username).
	IdentitySubject
)

// TLSOptions configure a CertManager.
type TLSOptions struct {
	// Certs are served by SNI: the first whose names match the name the
	// client asks for, else the first. At least one is required.
	Certs []KeyPair
	// ClientCA, when set, is a PEM file of CAs that client certificates
	// are verified against. Clients may still connect without one unless
	// RequireClientCert.
	ClientCA string
	// ClientCAPath, when set, is a directory whose PEM files hold more
	// such CAs (mosquitto's capath): every regular file in it that holds
	// PEM certificates, so that it works whether or not the directory
	// was c_rehash'd (the hash links are symbolic links to the same
	// files; a certificate read twice is harmless). Files without PEM
	// certificates are skipped; a directory without any is an error.
	ClientCAPath      string
	RequireClientCert bool
	// CRLFile, when set, is a file of certificate revocation lists
	// (PEM, or one DER list) checked against verified client
	// certificates, as mosquitto's crlfile: a revoked certificate, or
	// one whose issuer has no valid CRL in the file, is refused.
	CRLFile string
	// CipherSuites, when set, are the only suites offered for TLS 1.2
	// and below (TLS 1.3 suites cannot be chosen in crypto/tls).
	CipherSuites []uint16
	// Identity picks the client's name from its verified certificate.
	Identity Identity
	// MinVersion is the lowest TLS version accepted. Default TLS 1.2.
	MinVersion uint16
	// NextProtos are the ALPN protocols offered, if any.
	NextProtos []string
}

// CertManager holds the certificates and client CAs of TLS listeners and
// reloads them (Reload, Watch) without disturbing established conns: each
// handshake takes the configuration current at that moment.
type CertManager struct {
	opts TLSOptions
	cur  atomic.Pointer[tls.Config]

	mu     sync.Mutex // serialises reloads
	stamps map[string]fileStamp
}

type fileStamp struct {
	mod  time.Time
	size int64
}

// NewCertManager loads the files named by o. It fails if none are named,
// a file cannot be read or a key does not match its certificate.
func NewCertManager(o TLSOptions) (*CertManager, error) {
	if len(o.Certs) == 0 {
		return nil, errors.New("tls: no certificate configured")
	}
	if o.Identity != IdentityNone && o.ClientCA == "" && o.ClientCAPath == "" {
		return nil, errors.New("tls: identity from client certificates needs client_ca")
	}
	if o.CRLFile != "" && o.ClientCA == "" && o.ClientCAPath == "" {
		return nil, errors.New("tls: crl_file needs client_ca")
	}
	if o.RequireClientCert && o.ClientCA == "" && o.ClientCAPath == "" {
		return nil, errors.New("tls: require_client_cert needs client_ca")
	}
	if o.MinVersion == 0 {
		o.MinVersion = tls.VersionTLS12
	}
	m := &CertManager{opts: o}
	if err := m.Reload(); err != nil {
		return nil, err
	}
	return m, nil
}

// Config returns the tls.Config for a listener. It hands each handshake
// the configuration loaded last.
func (m *CertManager) Config() *tls.Config {
	return &tls.Config{
		MinVersion:   m.opts.MinVersion,
		CipherSuites: m.opts.CipherSuites,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return m.cur.Load(), nil
		},
	}
}

// Reload reads every file again. On error the previous certificates stay
// in use and the error names the file.
func (m *CertManager) Reload() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	stamps := m.statAll()
	cfg, err := m.load()
	if err != nil {
		return err
	}
	m.cur.Store(cfg)
	m.stamps = stamps
	return nil
}

func (m *CertManager) load() (*tls.Config, error) {
	cfg := &tls.Config{
		MinVersion:   m.opts.MinVersion,
		NextProtos:   m.opts.NextProtos,
		CipherSuites: m.opts.CipherSuites,
	}
	for _, kp := range m.opts.Certs {
		// Leaf is filled in, so SNI selection (SupportsCertificate) does
		// not parse the certificate on every handshake.
		c, err := tls.LoadX509KeyPair(kp.Cert, kp.Key)
		if err != nil {
			return nil, fmt.Errorf("tls: certificate %s, key %s: %w", kp.Cert, kp.Key, err)
		}
		// With several, crypto/tls picks by SNI: the first whose names
		// (and key type) suit the ClientHello, else the first.
		cfg.Certificates = append(cfg.Certificates, c)
	}
	if m.opts.ClientCA != "" || m.opts.ClientCAPath != "" {
		pool := x509.NewCertPool()
		if m.opts.ClientCA != "" {
			pem, err := os.ReadFile(m.opts.ClientCA)
			if err != nil {
				return nil, fmt.Errorf("tls: client_ca: %w", err)
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("tls: client_ca %s: no PEM certificates in it", m.opts.ClientCA)
			}
		}
		if err := appendCADir(pool, m.opts.ClientCAPath); err != nil {
			return nil, err
		}
		cfg.ClientCAs = pool
		crls, err := loadCRLs(m.opts.CRLFile)
		if err != nil {
			return nil, err
		}
		if crls != nil {
			cfg.VerifyPeerCertificate = func(_ [][]byte, chains [][]*x509.Certificate) error {
				return crls.check(chains, time.Now())
			}
		}
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		if m.opts.RequireClientCert {
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	return cfg, nil
}

func (m *CertManager) files() []string {
	var fs []string
	for _, kp := range m.opts.Certs {
		fs = append(fs, kp.Cert, kp.Key)
	}
	if m.opts.ClientCA != "" {
		fs = append(fs, m.opts.ClientCA)
	}
	if m.opts.CRLFile != "" {
		fs = append(fs, m.opts.CRLFile)
	}
	if m.opts.ClientCAPath != "" {
		// The directory's own time changes when a file is added or
		// removed; each file's when it is rewritten.
		fs = append(fs, m.opts.ClientCAPath)
		ents, _ := os.ReadDir(m.opts.ClientCAPath)
		for _, e := range ents {
			fs = append(fs, filepath.Join(m.opts.ClientCAPath, e.Name()))
		}
	}
	return fs
}

// appendCADir adds the PEM certificates of every file in dir ("" for
// none) to pool.
func appendCADir(pool *x509.CertPool, dir string) error {
	if dir == "" {
		return nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("tls: capath: %w", err)
	}
	found := false
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() {
			continue // a subdirectory or a dangling hash link
		}
		pem, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("tls: capath: %w", err)
		}
		if pool.AppendCertsFromPEM(pem) {
			found = true
		}
	}
	if !found {
		return fmt.Errorf("tls: capath %s: no file in it holds PEM certificates", dir)
	}
	return nil
}

func (m *CertManager) statAll() map[string]fileStamp {
	s := make(map[string]fileStamp)
	for _, f := range m.files() {
		if fi, err := os.Stat(f); err == nil {
			s[f] = fileStamp{fi.ModTime(), fi.Size()}
		}
	}
	return s
}

// changed reports whether any file's modification time or size differs
// from the last successful load.
func (m *CertManager) changed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.statAll()
	for _, f := range m.files() {
		if now[f] != m.stamps[f] {
			return true
		}
	}
	return false
}

// Watch reloads whenever a value arrives on trigger (SIGHUP, say) and
// whenever a file's modification time or size changes, checked every
// interval (no polling if interval <= 0). report gets the outcome of each
// reload asked for by trigger, and of each poll that loaded something:
// every success, and a failure unless it is the one reported last. It
// returns when ctx ends.
//
// A failed reload is tried again at every poll until one succeeds, not
// only when a file changes again: a certificate renewed by writing the
// chain and then the key (or a file caught half-written) fails to load
// first, and the last write need not change a modification time or size
// that the poll can see (tools such as cp -p, rsync -t or tar keep the
// source's time, and sizes of same-type keys are equal). Meanwhile the old
// certificates stay in use, and the failure is reported once, not at
// every poll.
func (m *CertManager) Watch(ctx context.Context, interval time.Duration, trigger <-chan struct{}, report func(error)) {
	var tick <-chan time.Time
	if interval > 0 {
		t := time.NewTicker(interval)
		defer t.Stop()
		tick = t.C
	}
	var failing error // the failure reported last; nil once a reload succeeds
	for {
		asked := false
		select {
		case <-ctx.Done():
			return
		case <-trigger:
			asked = true
		case <-tick:
			if failing == nil && !m.changed() {
				continue
			}
		}
		err := m.Reload()
		// A poll gets here only for news: changed files, or a retry.
		if asked || err == nil || !sameFailure(err, failing) {
			report(err)
		}
		failing = err
	}
}

// sameFailure reports whether a and b are failures with the same message.
func sameFailure(a, b error) bool {
	return a != nil && b != nil && a.Error() == b.Error()
}

// TLS is TLSWith with the default options.
func TLS(inner net.Listener, m *CertManager) net.Listener {
	return TLSWith(inner, m, TLSListenOptions{})
}

// TLSListenOptions configures a TLS listener's handshakes.
type TLSListenOptions struct {
	// HandshakeTimeout bounds each conn's TLS handshake. Default 10s.
	HandshakeTimeout time.Duration
	// Logf reports the conns closed because their handshake did not end
	// within HandshakeTimeout.
	Logf func(msg string, args ...any)
}

// TLSWith returns a listener that serves TLS on inner's conns with m's
// certificates. Each conn's handshake runs in a goroutine of its own,
// bounded by o.HandshakeTimeout, and the conn is handed out once it
// ended, so that the broker's CONNECT timeout counts from there, as after
// a WebSocket upgrade: with the handshake on the conn's first Read, under
// the CONNECT timeout, a handshake slowed by a loaded machine used up a
// short connect_timeout and the client's CONNECT met a closed conn. A conn
// whose handshake failed is handed out all the same: its Read returns the
// handshake's error, so the broker reports why it ended. One whose
// handshake ran out of time is closed and reported to o.Logf instead: its
// Read would return that timeout forever, which a reader takes for an
// early deadline. When m verifies client certificates and picks an
// identity, the conns implement CertIdentity.
func TLSWith(inner net.Listener, m *CertManager, o TLSListenOptions) net.Listener {
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 10 * time.Second
	}
	cfg, id := m.Config(), m.opts.Identity
	return newAsyncListener(inner, func(c net.Conn) (net.Conn, error) {
		return tlsHandshake(c, cfg, id, o.HandshakeTimeout)
	}, o.Logf)
}

func tlsHandshake(c net.Conn, cfg *tls.Config, id Identity, timeout time.Duration) (net.Conn, error) {
	tc := tls.Server(c, cfg)
	c.SetDeadline(time.Now().Add(timeout))
	var ne net.Error
	if err := tc.Handshake(); errors.As(err, &ne) && ne.Timeout() {
		return nil, fmt.Errorf("TLS handshake not done within %v: %w", timeout, err)
	}
	c.SetDeadline(time.Time{})
	if id == IdentityNone {
		return tc, nil
	}
	return &identityConn{Conn: tc, tc: tc, id: id}, nil
}

// CertIdentity is implemented by conns from listeners configured to name
// clients by their certificates. After the TLS handshake (which has
// happened once a Read returned data), CertIdentity returns the name taken
// from the verified client certificate, or ok false when the client sent
// none.
type CertIdentity interface {
	CertIdentity() (name string, ok bool)
}

type identityConn struct {
	net.Conn
	tc *tls.Conn
	id Identity
}

func (c *identityConn) CertIdentity() (string, bool) {
	st := c.tc.ConnectionState()
	if !st.HandshakeComplete || len(st.VerifiedChains) == 0 {
		return "", false
	}
	return certName(st.VerifiedChains[0][0], c.id)
}

// NetConn returns the *tls.Conn, as tls.Conn.NetConn does for its own.
func (c *identityConn) NetConn() net.Conn { return c.tc }

// ReadTimeoutSafe marks identityConn as transparent (broker.TransparentConn).
func (c *identityConn) ReadTimeoutSafe() {}

// certName returns the name id picks from cert.
func certName(cert *x509.Certificate, id Identity) (string, bool) {
	switch id {
	case IdentityCN:
		return cert.Subject.CommonName, cert.Subject.CommonName != ""
	case IdentitySubject:
		// From the raw subject, to keep its attributes in the
		// certificate's order (reversed, as RFC 2253 writes them).
		var rdn pkix.RDNSequence
		if rest, err := asn1.Unmarshal(cert.RawSubject, &rdn); err != nil || len(rest) != 0 {
			return "", false
		}
		name := rdn.String()
		return name, name != ""
	case IdentitySAN:
		switch {
		case len(cert.DNSNames) > 0:
			return cert.DNSNames[0], true
		case len(cert.EmailAddresses) > 0:
			return cert.EmailAddresses[0], true
		case len(cert.URIs) > 0:
			return cert.URIs[0].String(), true
		}
	}
	return "", false
}
