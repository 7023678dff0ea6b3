package config

import (
	"fmt"
	"net/netip"
	"strings"

	"go.yaml.in/yaml/v3"
)

// listener decodes one entry of listeners: its url and options.
func (d *decoder) listener(n *yaml.Node, path string, c *Config) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, "%s: must be a mapping such as {url: mqtt://0.0.0.0:1883}, got %s", path, describe(n))
		return
	}
	var ln Listener
	o := DefaultListenerOptions()
	d.mapping(n, path, map[string]field{
		"url": func(p string, v *yaml.Node) {
			if !d.scalar(v, p, "a URL such as mqtt://0.0.0.0:1883") {
				return
			}
			if l, err := ParseListener(v.Value); d.ok(v, p, err) {
				ln = l
			}
		},
		"name": d.str(&o.Name),
		"anonymous": func(p string, v *yaml.Node) {
			var b bool
			d.boolean(v, p, &b)
			o.Anonymous = &b
		},
		"proxy_protocol":    func(p string, v *yaml.Node) { d.boolean(v, p, &o.ProxyProtocol) },
		"max_connections":   intField(d, &o.MaxConnections),
		"handshake_timeout": func(p string, v *yaml.Node) { d.duration(v, p, 1, &o.HandshakeTimeout) },
		"tls":               func(p string, v *yaml.Node) { d.tls(v, p, &o.TLS) },
		"ws":                func(p string, v *yaml.Node) { d.ws(v, p, &o.WS) },
		"mount_point": func(p string, v *yaml.Node) {
			d.str(&o.MountPoint)(p, v)
			if err := CheckMountPoint(o.MountPoint); err != nil {
				d.errorf(v, "%s: %v", p, err)
			}
		},
		"client_ids": func(p string, v *yaml.Node) {
			o.ClientIDs = new(ClientIDs)
			d.clientIDs(v, p, o.ClientIDs, false)
		},
		"interface": d.str(&o.Interface),
		"topic_alias_maximum": func(p string, v *yaml.Node) {
			if n, ok := d.integer(v, p, 0, 65535); ok {
				a := int(n)
				o.TopicAliasMaximum = &a
			}
		},
		"username_as_client_id": func(p string, v *yaml.Node) { d.boolean(v, p, &o.UsernameAsClientID) },
		"max_qos": func(p string, v *yaml.Node) {
			if n, ok := d.integer(v, p, 0, 2); ok {
				q := int(n)
				o.MaxQoS = &q
			}
		},
		"auth": func(p string, v *yaml.Node) {
			o.Auth = new(ListenerAuth)
			d.mapping(v, p, map[string]field{
				"password_file": d.str(&o.Auth.PasswordFile),
				"acl_file":      d.str(&o.Auth.ACLFile),
			})
		},
	})
	if ln.URL == "" && !hasKey(n, "url") {
		d.errorf(n, "%s: missing key \"url\"", path)
	}
	ln.ListenerOptions = o
	if ln.URL != "" {
		if err := ln.Check(); err != nil {
			d.errorf(n, "%s: %v", path, err)
		}
	}
	c.Listeners = append(c.Listeners, ln)
}

func (d *decoder) tls(n *yaml.Node, path string, t *TLS) {
	var first KeyPair
	d.mapping(n, path, map[string]field{
		"cert": d.str(&first.Cert),
		"key":  d.str(&first.Key),
		"certs": func(p string, v *yaml.Node) {
			d.list(v, p, func(p string, item *yaml.Node) {
				var kp KeyPair
				d.mapping(item, p, map[string]field{"cert": d.str(&kp.Cert), "key": d.str(&kp.Key)})
				if kp.Cert == "" || kp.Key == "" {
					d.errorf(item, "%s: needs both cert and key", p)
				}
				t.Certs = append(t.Certs, kp)
			})
		},
		"client_ca":           d.str(&t.ClientCA),
		"client_ca_path":      d.str(&t.ClientCAPath),
		"crl_file":            d.str(&t.CRLFile),
		"require_client_cert": func(p string, v *yaml.Node) { d.boolean(v, p, &t.RequireClientCert) },
		"identity":            d.oneOf(&t.Identity, "cn", "san", "subject"),
		"min_version":         d.oneOf(&t.MinVersion, "1.1", "1.2", "1.3"),
		"cipher_suites": func(p string, v *yaml.Node) {
			d.list(v, p, func(p string, item *yaml.Node) {
				var s string
				d.str(&s)(p, item)
				if s == "" {
					return
				}
				if _, err := CipherSuiteID(s); err != nil {
					d.errorf(item, "%s: %v", p, err)
					return
				}
				t.CipherSuites = append(t.CipherSuites, s)
			})
		},
	})
	switch {
	case first.Cert != "" && first.Key != "":
		t.Certs = append([]KeyPair{first}, t.Certs...)
	case first.Cert != "" || first.Key != "":
		d.errorf(n, "%s: cert and key go together", path)
	}
}

func (d *decoder) ws(n *yaml.Node, path string, w *WS) {
	d.mapping(n, path, map[string]field{
		"paths": func(p string, v *yaml.Node) {
			d.list(v, p, func(p string, item *yaml.Node) {
				var s string
				d.str(&s)(p, item)
				if s != "" && !strings.HasPrefix(s, "/") {
					d.errorf(item, "%s: must start with /, got %q", p, s)
				}
				w.Paths = append(w.Paths, s)
			})
		},
		"any_path": func(p string, v *yaml.Node) { d.boolean(v, p, &w.AnyPath) },
		"http_dir": d.str(&w.HTTPDir),
		"allowed_origins": func(p string, v *yaml.Node) {
			d.list(v, p, func(p string, item *yaml.Node) {
				var s string
				d.str(&s)(p, item)
				w.AllowedOrigins = append(w.AllowedOrigins, s)
			})
		},
		"trusted_proxies": func(p string, v *yaml.Node) {
			d.list(v, p, func(p string, item *yaml.Node) {
				if !d.scalar(item, p, "an address or CIDR such as 10.0.0.0/8") {
					return
				}
				pfx, err := parsePrefix(item.Value)
				if err != nil {
					d.errorf(item, "%s: must be an address or CIDR such as 127.0.0.1 or 10.0.0.0/8, got %q", p, item.Value)
					return
				}
				w.TrustedProxies = append(w.TrustedProxies, pfx)
			})
		},
	})
}

// parsePrefix accepts a CIDR or a single address.
func parsePrefix(s string) (netip.Prefix, error) {
	if ip, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(ip, ip.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	return p.Masked(), err
}

// str decodes a non-empty string.
func (d *decoder) str(dst *string) field {
	return func(p string, v *yaml.Node) {
		if d.scalar(v, p, "a string") {
			if v.Value == "" {
				d.errorf(v, "%s: must not be empty", p)
				return
			}
			*dst = v.Value
		}
	}
}

// oneOf decodes one of the given words.
func (d *decoder) oneOf(dst *string, words ...string) field {
	want := strings.Join(words, " or ")
	return func(p string, v *yaml.Node) {
		if !d.scalar(v, p, want) {
			return
		}
		for _, w := range words {
			if v.Value == w {
				*dst = w
				return
			}
		}
		d.errorf(v, "%s: must be %s, got %s", p, want, describe(v))
	}
}

// list calls item for each element of the sequence n.
func (d *decoder) list(n *yaml.Node, path string, item func(p string, v *yaml.Node)) {
	if isNull(n) {
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, "%s: must be a list, got %s", path, describe(n))
		return
	}
	for i, v := range n.Content {
		item(fmt.Sprintf("%s[%d]", path, i), resolve(v))
	}
}

// clientIDs decodes a client_ids section.
func (d *decoder) clientIDs(n *yaml.Node, path string, ids *ClientIDs, top bool) {
	allow := true
	fields := map[string]field{
		"allow_empty": func(p string, v *yaml.Node) { d.boolean(v, p, &allow) },
		"prefix":      d.str(&ids.Prefix),
	}
	if top {
		fields["required_prefix"] = d.str(&ids.RequiredPrefix)
	}
	d.mapping(n, path, fields)
	ids.RefuseEmpty = !allow
}

// CheckMountPoint reports a mount point that cannot start a topic name:
// one with a wildcard would turn clients' topics into filters.
func CheckMountPoint(m string) error {
	if m == "" {
		return nil
	}
	if strings.ContainsAny(m, "+#\x00") {
		return fmt.Errorf("mount point %q: must not contain + # or NUL", m)
	}
	return nil
}
