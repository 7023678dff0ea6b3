package config

import (
	"fmt"
	"strings"
	"testing"
)

// Every combination of docs/security.md's table: what authenticates
// clients × auth.allow_anonymous (unset, true, false) × a loopback or a
// non-loopback listener, with and without the listener's own anonymous:,
// and listeners given in the file or on the command line (--listen, which
// replaces the file's list: the listener has no anonymous: of its own).
func TestAnonymousRules(t *testing.T) {
	means := map[string]string{
		"nothing":       "",
		"acl file only": "  acl_file: acl\n", // says what names may do, not who a client is
		"password file": "  password_file: passwd\n",
		"http hook":     "  http_hook: {url: http://127.0.0.1:9/auth}\n",
		"certificates":  "  cert_identity_as_username: true\n",
	}
	allow := map[string]string{"unset": "", "true": "  allow_anonymous: true\n", "false": "  allow_anonymous: false\n"}
	listeners := []string{"127.0.0.1:1883", "[::1]:1883", "localhost:1883", "0.0.0.0:1883", ":1883", "192.0.2.1:1883"}
	for mean, authSrc := range means {
		for set, allowSrc := range allow {
			for _, addr := range listeners {
				for _, own := range []string{"", "true", "false"} {
					src := "listeners:\n  - url: mqtt://" + addr + "\n"
					if own != "" {
						src += "    anonymous: " + own + "\n"
					}
					if authSrc+allowSrc != "" {
						src += "auth:\n" + authSrc + allowSrc
					}
					c, err := Parse("", []byte(src))
					if err != nil {
						t.Fatalf("%s: %v", src, err)
					}
					loopback := !strings.HasPrefix(addr, "0.") && !strings.HasPrefix(addr, ":") && !strings.HasPrefix(addr, "192.")
					var want AnonymousMode
					switch {
					case own != "":
						want = onOff(own == "true")
					case set != "unset":
						want = onOff(set == "true")
					case mean != "nothing" && mean != "acl file only":
						want = AnonymousRefused
					default:
						want = AnonymousLocal
					}
					got, why := c.Anonymous(c.Listeners[0])
					if got != want || why == "" {
						t.Errorf("%s, allow_anonymous %s, listener %s (loopback %v), anonymous: %q: %v (%s), want %v",
							mean, set, addr, loopback, own, got, why, want)
					}
					if want == AnonymousLocal && loopback != strings.Contains(why, "on loopback") {
						t.Errorf("listener %s: why %q does not say whether it is on loopback", addr, why)
					}
					// --listen replaces the listeners: no anonymous: of their own.
					ln, err := ParseListener("mqtt://" + addr)
					if err != nil {
						t.Fatal(err)
					}
					if own == "" {
						if got2, _ := c.Anonymous(ln); got2 != got {
							t.Errorf("%s, allow_anonymous %s: --listen mqtt://%s gives %v, the file's listener %v", mean, set, addr, got2, got)
						}
					}
				}
			}
		}
	}
}

// An empty file (and no file: Default) leaves allow_anonymous unset.
func TestAnonymousDefault(t *testing.T) {
	for name, c := range map[string]*Config{"Default()": Default(), "empty file": mustParse(t, "")} {
		if c.Auth.AllowAnonymous != nil {
			t.Errorf("%s: allow_anonymous %v, want unset", name, *c.Auth.AllowAnonymous)
		}
		if mode, why := c.Anonymous(c.Listeners[0]); mode != AnonymousLocal || !strings.Contains(why, "other machines are refused") {
			t.Errorf("%s: default listener %s: %v (%s), want %v", name, c.Listeners[0].URL, mode, why, AnonymousLocal)
		}
	}
}

func mustParse(t *testing.T, src string) *Config {
	t.Helper()
	c, err := Parse("", []byte(src))
	if err != nil {
		t.Fatal(fmt.Errorf("%q: %w", src, err))
	}
	return c
}

// On a loopback listener, the start-up reason says whether clients relayed
// by a proxy on this machine are judged by their own address.
func TestAnonymousLoopbackBehindProxy(t *testing.T) {
	for src, want := range map[string]string{
		"listeners:\n  - url: ws://127.0.0.1:8083/mqtt\n":                                         "set proxy_protocol or ws.trusted_proxies",
		"listeners:\n  - url: ws://127.0.0.1:8083/mqtt\n    ws: {trusted_proxies: [127.0.0.1]}\n": "judged by the address it passes on",
		"listeners:\n  - url: mqtt://127.0.0.1:1883\n    proxy_protocol: true\n":                  "judged by the address it passes on",
	} {
		c := mustParse(t, src)
		if mode, why := c.Anonymous(c.Listeners[0]); mode != AnonymousLocal || !strings.Contains(why, want) {
			t.Errorf("%s: %v (%s), want %v saying %q", src, mode, why, AnonymousLocal, want)
		}
	}
}
