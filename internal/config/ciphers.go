package config

import (
	"crypto/tls"
	"fmt"
	"slices"
	"strings"
)

// openSSLCiphers maps the OpenSSL names of TLS 1.2 cipher suites (what a
// mosquitto.conf's ciphers lists, as "openssl ciphers" prints them) to
// the IANA names that Go's crypto/tls implements. Suites Go lacks (DHE,
// CCM, ARIA, CAMELLIA, PSK, ...) are not here: asked for, they are an
// error naming them.
var openSSLCiphers = map[string]string{
	"ECDHE-ECDSA-AES128-GCM-SHA256": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
	"ECDHE-RSA-AES128-GCM-SHA256":   "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
	"ECDHE-ECDSA-AES256-GCM-SHA384": "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
	"ECDHE-RSA-AES256-GCM-SHA384":   "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
	"ECDHE-ECDSA-CHACHA20-POLY1305": "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
	"ECDHE-RSA-CHACHA20-POLY1305":   "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
	"ECDHE-ECDSA-AES128-SHA":        "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
	"ECDHE-RSA-AES128-SHA":          "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
	"ECDHE-ECDSA-AES256-SHA":        "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
	"ECDHE-RSA-AES256-SHA":          "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
	"ECDHE-ECDSA-AES128-SHA256":     "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
	"ECDHE-RSA-AES128-SHA256":       "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
	"ECDHE-RSA-DES-CBC3-SHA":        "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
	"ECDHE-ECDSA-RC4-SHA":           "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
	"ECDHE-RSA-RC4-SHA":             "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
	"AES128-GCM-SHA256":             "TLS_RSA_WITH_AES_128_GCM_SHA256",
	"AES256-GCM-SHA384":             "TLS_RSA_WITH_AES_256_GCM_SHA384",
	"AES128-SHA":                    "TLS_RSA_WITH_AES_128_CBC_SHA",
	"AES256-SHA":                    "TLS_RSA_WITH_AES_256_CBC_SHA",
	"AES128-SHA256":                 "TLS_RSA_WITH_AES_128_CBC_SHA256",
	"DES-CBC3-SHA":                  "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
	"RC4-SHA":                       "TLS_RSA_WITH_RC4_128_SHA",
}

// CipherSuiteID returns crypto/tls's id of the TLS 1.2 cipher suite with
// IANA name name. A TLS 1.3 suite is refused: crypto/tls does not let them
// be chosen.
func CipherSuiteID(name string) (uint16, error) {
	for _, s := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		if s.Name != name {
			continue
		}
		if slices.Equal(s.SupportedVersions, []uint16{tls.VersionTLS13}) {
			return 0, fmt.Errorf("%s is a TLS 1.3 suite: Go's crypto/tls always offers all three and lets none be chosen", name)
		}
		return s.ID, nil
	}
	return 0, fmt.Errorf("unknown cipher suite %q: want an IANA name that Go's crypto/tls implements, such as TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", name)
}

// openSSLCipherList reads mosquitto's ciphers: OpenSSL names separated
// by colons (or spaces or commas, as OpenSSL also accepts). It returns the
// IANA names; an unknown name, a name Go lacks or an OpenSSL keyword
// (HIGH, !aNULL, ...) is an error naming it.
func openSSLCipherList(v string) ([]string, error) {
	var names []string
	for _, n := range strings.FieldsFunc(v, func(r rune) bool { return r == ':' || r == ' ' || r == ',' }) {
		iana, ok := openSSLCiphers[n]
		if !ok {
			return nil, fmt.Errorf("cipher %q: Roost takes the OpenSSL names of the TLS 1.2 suites Go's crypto/tls implements (%s), not OpenSSL keywords or other suites", n, strings.Join(sortedKeys(openSSLCiphers), ", "))
		}
		names = append(names, iana)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("want a colon-separated list of cipher names")
	}
	return names, nil
}

// tls13Suites are the OpenSSL (and IANA) names of the TLS 1.3 suites Go
// offers, all of them, always.
var tls13Suites = []string{"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}

// checkTLS13Ciphers accepts a ciphers_tls1.3 that lists exactly the
// suites Go offers, in any order (OpenSSL's default list is one such), and
// refuses any other: crypto/tls cannot narrow them.
func checkTLS13Ciphers(v string) error {
	got := strings.Split(v, ":")
	slices.Sort(got)
	if slices.Equal(got, tls13Suites) {
		return nil
	}
	return fmt.Errorf("Go's crypto/tls does not let the TLS 1.3 suites be chosen: it always offers %s; only a list of exactly those is accepted", strings.Join(tls13Suites, ":"))
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
