package bridge

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/ocsp"
)

// ErrOCSP is wrapped by the handshake errors of Config.RequireOCSP.
var ErrOCSP = errors.New("bridge: OCSP")

// verifyOCSP is a tls.Config.VerifyConnection that requires the remote to
// staple a valid OCSP response saying its certificate is good (mosquitto's
// bridge_require_ocsp). Go's TLS client asks for the staple (the
// status_request extension) on every handshake; the response's signature
// is checked against the certificate's issuer, and its validity period
// against the clock.
func verifyOCSP(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return fmt.Errorf("%w: no server certificate", ErrOCSP)
	}
	if len(cs.OCSPResponse) == 0 {
		return fmt.Errorf("%w: the server stapled no OCSP response (require_ocsp is set)", ErrOCSP)
	}
	leaf := cs.PeerCertificates[0]
	var issuer *x509.Certificate
	switch {
	case len(cs.VerifiedChains) > 0 && len(cs.VerifiedChains[0]) > 1:
		issuer = cs.VerifiedChains[0][1]
	case len(cs.PeerCertificates) > 1:
		issuer = cs.PeerCertificates[1] // insecure: not verified, but the staple is checked against it
	default:
		return fmt.Errorf("%w: the issuer of %q is unknown, so the response cannot be checked", ErrOCSP, leaf.Subject.CommonName)
	}
	resp, err := ocsp.ParseResponseForCert(cs.OCSPResponse, leaf, issuer)
	if err != nil {
		return fmt.Errorf("%w: stapled response: %w", ErrOCSP, err)
	}
	now := time.Now()
	switch {
	case resp.Status == ocsp.Revoked:
		return fmt.Errorf("%w: the server's certificate was revoked at %v", ErrOCSP, resp.RevokedAt)
	case resp.Status != ocsp.Good:
		return fmt.Errorf("%w: the server's certificate status is unknown to its responder", ErrOCSP)
	case now.Before(resp.ThisUpdate.Add(-5 * time.Minute)):
		return fmt.Errorf("%w: the stapled response starts in the future (%v)", ErrOCSP, resp.ThisUpdate)
	case !resp.NextUpdate.IsZero() && now.After(resp.NextUpdate):
		return fmt.Errorf("%w: the stapled response expired at %v", ErrOCSP, resp.NextUpdate)
	}
	return nil
}
