// Package devcert makes a local certificate authority and the certificates
// it signs, for trying TLS and wss:// on one machine (roost cert dev) and
// for tests. Keys are ECDSA P-256; nothing here is meant for production,
// where certificates come from a CA that clients already trust.
package devcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// CA is a certificate authority: its certificate and key.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	DER  []byte
}

// NewCA makes a self-signed CA named cn, valid for validity.
func NewCA(cn string, validity time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"Roost development CA"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, DER: der}, nil
}

// LoadCA reads a CA written by CertPEM and KeyPEM.
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, errors.New("devcert: CA certificate or key is not PEM")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("devcert: CA certificate: %w", err)
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("devcert: CA key: %w", err)
	}
	if !cert.IsCA {
		return nil, errors.New("devcert: certificate is not a CA")
	}
	return &CA{Cert: cert, Key: key, DER: cb.Bytes}, nil
}

// CertPEM is the CA certificate, PEM-encoded: the file clients trust.
func (ca *CA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.DER})
}

// KeyPEM is the CA key, PEM-encoded.
func (ca *CA) KeyPEM() []byte {
	der, _ := x509.MarshalECPrivateKey(ca.Key)
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

// Leaf describes a certificate to issue.
type Leaf struct {
	CommonName string
	// Organization, when set, is the subject's O (after CN in its RFC
	// 2253 form: "CN=alice,O=Roost").
	Organization []string
	Hosts        []string // DNS names and IP addresses
	Emails       []string
	Client       bool // for client authentication instead of a server
	Peer         bool // for both: a cluster node accepts and dials routes
	Validity     time.Duration
}

// Issue signs a certificate for l. It returns the certificate chain (leaf,
// then the CA, as servers should send it) and the key, PEM-encoded.
func (ca *CA) Issue(l Leaf) (chainPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	if l.Validity == 0 {
		l.Validity = 825 * 24 * time.Hour // the longest that Apple platforms accept
	}
	tmpl := &x509.Certificate{
		SerialNumber:   serial(),
		Subject:        pkix.Name{CommonName: l.CommonName, Organization: l.Organization},
		NotBefore:      time.Now().Add(-time.Hour),
		NotAfter:       time.Now().Add(l.Validity),
		KeyUsage:       x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		EmailAddresses: l.Emails,
	}
	if l.Client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	if l.Peer {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	for _, h := range l.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	chainPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	chainPEM = append(chainPEM, ca.CertPEM()...)
	return chainPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return n
}

// CRL returns a PEM certificate revocation list signed by ca that revokes
// the certificates with the given serial numbers and is due for renewal
// after validity (its Next Update).
func (ca *CA) CRL(serials []*big.Int, validity time.Duration) ([]byte, error) {
	tmpl := &x509.RevocationList{Number: serial(), ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(validity)}
	for _, s := range serials {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: time.Now().Add(-time.Minute)})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), nil
}
