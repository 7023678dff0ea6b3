package listener

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"
)

// errNoCRL and errRevoked refuse a client certificate during the
// handshake; crypto/tls sends the client a bad_certificate alert.
var (
	errRevoked = errors.New("tls: client certificate revoked")
	errNoCRL   = errors.New("tls: no CRL for the client certificate's issuer in crl_file")
)

// crlSet is the certificate revocation lists of one CRL file.
type crlSet []*x509.RevocationList

// loadCRLs reads path ("" for none): PEM "X509 CRL" blocks, or one DER
// list.
func loadCRLs(path string) (crlSet, error) {
	if path == "" {
		return nil, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tls: crl_file: %w", err)
	}
	var set crlSet
	if !bytes.Contains(data, []byte("-----BEGIN")) {
		l, err := x509.ParseRevocationList(data)
		if err != nil {
			return nil, fmt.Errorf("tls: crl_file %s: %w", path, err)
		}
		return crlSet{l}, nil
	}
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type != "X509 CRL" {
			continue
		}
		l, err := x509.ParseRevocationList(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("tls: crl_file %s: %w", path, err)
		}
		set = append(set, l)
	}
	if len(set) == 0 {
		return nil, fmt.Errorf("tls: crl_file %s: no X509 CRL in it", path)
	}
	return set, nil
}

// check refuses a verified client chain whose leaf is revoked, as OpenSSL
// does with X509_V_FLAG_CRL_CHECK (what mosquitto's crlfile sets): only
// the leaf is checked, and a CRL of its issuer must be there, signed by
// that issuer and not past its Next Update; otherwise the client is
// refused rather than let in unchecked.
func (s crlSet) check(chains [][]*x509.Certificate, now time.Time) error {
	for _, chain := range chains {
		if len(chain) < 2 {
			continue // a self-signed client certificate that is itself a CA
		}
		leaf, issuer := chain[0], chain[1]
		var found *x509.RevocationList
		for _, l := range s {
			if bytes.Equal(l.RawIssuer, leaf.RawIssuer) && l.CheckSignatureFrom(issuer) == nil {
				found = l
				break
			}
		}
		switch {
		case found == nil:
			return errNoCRL
		case !found.NextUpdate.IsZero() && now.After(found.NextUpdate):
			return fmt.Errorf("tls: the CRL of %s expired at %s", issuer.Subject, found.NextUpdate.Format(time.RFC3339))
		}
		for _, e := range found.RevokedCertificateEntries {
			if e.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
				return fmt.Errorf("%w: serial %s", errRevoked, leaf.SerialNumber)
			}
		}
		return nil // the first verified chain decides, as in OpenSSL
	}
	return nil
}
