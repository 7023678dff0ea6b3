package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"
)

// Parse parses a configuration file's contents. name (the file's base name,
// or "") prefixes every error; see Load for the error forms.
func Parse(name string, data []byte) (*Config, error) {
	d := &decoder{file: name}
	c := Default()
	root, err := d.document(data)
	if err != nil {
		return nil, err
	}
	if root != nil {
		d.top(root, c)
	}
	if len(d.errs) > 0 {
		return nil, errors.Join(d.errs...)
	}
	return c, nil
}

// decoder walks a yaml.Node tree and collects every problem it finds.
type decoder struct {
	file string
	errs []error
}

func (d *decoder) errorf(n *yaml.Node, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Line: n.Line, Msg: fmt.Sprintf(format, args...)})
}

// yamlLine matches go-yaml's syntax errors so they can take the file:line form.
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// document returns the top node of the single document in data, or nil for
// an empty file.
func (d *decoder) document(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err == io.EOF {
		return nil, nil
	} else if err != nil {
		return nil, d.syntaxError(err)
	}
	var next yaml.Node
	if err := dec.Decode(&next); err != io.EOF {
		line := next.Line
		if err != nil || line == 0 {
			return nil, d.syntaxError(err)
		}
		return nil, &Error{File: d.file, Line: line, Msg: "only one YAML document is allowed"}
	}
	return doc.Content[0], nil
}

func (d *decoder) syntaxError(err error) error {
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{File: d.file, Line: line, Msg: m[2]}
	}
	if d.file != "" {
		return fmt.Errorf("%s: %w", d.file, err)
	}
	return err
}

// field decodes the value of one key; path is the key's full path.
type field func(path string, v *yaml.Node)

// mapping calls fields[key] for each key of the mapping n at path. Unknown
// and repeated keys are errors; a null n (an empty section) is allowed.
func (d *decoder) mapping(n *yaml.Node, path string, fields map[string]field) {
	n = resolve(n)
	if isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.errorf(n, "%s: must be a mapping of keys to values, got %s", orTop(path), describe(n))
		return
	}
	seen := make(map[string]bool)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, "%s: keys must be plain words, got %s", orTop(path), describe(k))
			continue
		}
		decode, ok := fields[k.Value]
		switch {
		case !ok && path == "":
			d.errorf(k, "unknown key %q", k.Value)
		case !ok:
			d.errorf(k, "unknown key %q in %s", k.Value, path)
		case seen[k.Value]:
			d.errorf(k, "%s: key repeated", join(path, k.Value))
		default:
			seen[k.Value] = true
			decode(join(path, k.Value), resolve(v))
		}
	}
}

func (d *decoder) top(n *yaml.Node, c *Config) {
	d.mapping(n, "", map[string]field{
		"listeners": func(p string, v *yaml.Node) { d.listeners(v, p, c) },
		"log":       func(p string, v *yaml.Node) { d.log(v, p, &c.Log) },
		"limits":    func(p string, v *yaml.Node) { d.limits(v, p, &c.Limits) },
		"sys_interval": func(p string, v *yaml.Node) {
			if v.Kind == yaml.ScalarNode && v.Value == "off" {
				c.SysInterval = 0
				return
			}
			d.duration(v, p, 0, &c.SysInterval)
		},
		"retain":     func(p string, v *yaml.Node) { d.boolean(v, p, &c.Retain) },
		"store":      func(p string, v *yaml.Node) { d.store(v, p, &c.Store) },
		"auth":       func(p string, v *yaml.Node) { d.auth(v, p, &c.Auth) },
		"http":       func(p string, v *yaml.Node) { d.http(v, p, &c.HTTP) },
		"bridges":    func(p string, v *yaml.Node) { d.bridges(v, p, c) },
		"cluster":    func(p string, v *yaml.Node) { d.cluster(v, p, &c.Cluster) },
		"client_ids": func(p string, v *yaml.Node) { d.clientIDs(v, p, &c.ClientIDs, true) },
	})
}

func (d *decoder) listeners(n *yaml.Node, path string, c *Config) {
	if isNull(n) {
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, "%s: must be a list of {url: ...} entries, got %s", path, describe(n))
		return
	}
	if len(n.Content) == 0 {
		d.errorf(n, "%s: at least one listener is required", path)
		return
	}
	c.Listeners = c.Listeners[:0]
	for i, item := range n.Content {
		d.listener(resolve(item), fmt.Sprintf("%s[%d]", path, i), c)
	}
}

func (d *decoder) log(n *yaml.Node, path string, l *Log) {
	d.mapping(n, path, map[string]field{
		"level": func(p string, v *yaml.Node) {
			if d.scalar(v, p, "one of debug, info, warn, error") {
				if lvl, err := ParseLogLevel(v.Value); d.ok(v, p, err) {
					l.Level = lvl
				}
			}
		},
		"format": func(p string, v *yaml.Node) {
			if d.scalar(v, p, "text or json") {
				if f, err := ParseLogFormat(v.Value); d.ok(v, p, err) {
					l.Format = f
				}
			}
		},
	})
}

func (d *decoder) limits(n *yaml.Node, path string, l *Limits) {
	d.mapping(n, path, map[string]field{
		"max_packet_size": func(p string, v *yaml.Node) {
			d.size(v, p, maxPacketSize, &l.MaxPacketSize)
		},
		"receive_maximum": uint16Field(d, 1, &l.ReceiveMaximum),
		"max_inflight":    uint16Field(d, 1, &l.MaxInflight),
		"max_queued":      intField(d, &l.MaxQueued),
		"expiry_sweep": func(p string, v *yaml.Node) {
			if v.Kind == yaml.ScalarNode && v.Value == "off" {
				l.ExpirySweep = -1
				return
			}
			d.duration(v, p, 1, &l.ExpirySweep)
		},
		"max_queued_bytes": func(p string, v *yaml.Node) {
			if n, ok := d.bytes(v, p, 1, math.MaxInt64); ok {
				l.MaxQueuedBytes = int(n)
			}
		},
		"queue_qos0":       func(p string, v *yaml.Node) { d.boolean(v, p, &l.QueueQoS0) },
		"max_topic_levels": intField(d, &l.MaxTopicLevels),
		"max_connections":  intField(d, &l.MaxConnections),
		"max_connections_per_ip": func(p string, v *yaml.Node) {
			if n, ok := d.integer(v, p, 0, 1<<31-1); ok {
				l.MaxConnectionsPerIP = int(n)
			}
		},
		"connect_rate_per_ip": func(p string, v *yaml.Node) { d.rate(v, p, &l.ConnectRatePerIP) },
		"max_subscriptions":   intField(d, &l.MaxSubscriptions),
		"publish_rate":        func(p string, v *yaml.Node) { d.rate(v, p, &l.PublishRate) },
		"connect_timeout":     func(p string, v *yaml.Node) { d.duration(v, p, 1, &l.ConnectTimeout) },
		"server_keep_alive":   uint16Field(d, 0, &l.ServerKeepAlive),
		"max_keep_alive":      uint16Field(d, 0, &l.MaxKeepAlive),
		"topic_alias_maximum": uint16Field(d, 1, &l.TopicAliasMaximum),
		"max_session_expiry": func(p string, v *yaml.Node) {
			if n, ok := d.integer(v, p, 0, 1<<32-1); ok {
				l.MaxSessionExpiry = uint32(n)
			}
		},
		"max_retained": func(p string, v *yaml.Node) {
			if n, ok := d.integer(v, p, 0, 1<<31-1); ok {
				l.MaxRetained = int(n)
			}
		},
		"max_retained_bytes": func(p string, v *yaml.Node) {
			if n, ok := d.bytes(v, p, 0, math.MaxInt64); ok {
				l.MaxRetainedBytes = int(n)
			}
		},
		"max_inflight_bytes": func(p string, v *yaml.Node) {
			if n, ok := d.bytes(v, p, 0, math.MaxInt64); ok {
				l.MaxInflightBytes = int(n)
			}
		},
		"max_payload_size": func(p string, v *yaml.Node) {
			if n, ok := d.bytes(v, p, 0, maxPayloadSize); ok {
				l.MaxPayloadSize = int(n)
			}
		},
		"persistent_session_expiry": func(p string, v *yaml.Node) {
			if v.Kind == yaml.ScalarNode && v.Value == "never" {
				l.PersistentSessionExpiry = 0
				return
			}
			d.duration(v, p, time.Second, &l.PersistentSessionExpiry)
		},
	})
	if l.MaxKeepAlive != 0 && l.ServerKeepAlive > l.MaxKeepAlive {
		d.errorf(n, "%s: server_keep_alive %d is above max_keep_alive %d", path, l.ServerKeepAlive, l.MaxKeepAlive)
	}
}

// maxPayloadSize is the largest payload MQTT can carry: the largest
// remaining length, of which the topic takes at least 2 bytes.
const maxPayloadSize = 268435455

// maxPacketSize is the largest MQTT packet: a 268,435,455-byte remaining
// length plus a 5-byte fixed header.
const maxPacketSize = 268435460

func uint16Field(d *decoder, min int64, dst *uint16) field {
	return func(p string, v *yaml.Node) {
		if n, ok := d.integer(v, p, min, 65535); ok {
			*dst = uint16(n)
		}
	}
}

// intField is a positive int: counts where zero could only mean "nothing".
func intField(d *decoder, dst *int) field {
	return func(p string, v *yaml.Node) {
		if n, ok := d.integer(v, p, 1, 1<<31-1); ok {
			*dst = int(n)
		}
	}
}

// ok records err, which is about the value v at path, and reports whether
// there was none.
func (d *decoder) ok(v *yaml.Node, path string, err error) bool {
	if err != nil {
		d.errorf(v, "%s: %v", path, err)
	}
	return err == nil
}

func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func hasKey(n *yaml.Node, key string) bool {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return true
		}
	}
	return false
}

// describe names what the user wrote, for "got ..." in messages.
func describe(n *yaml.Node) string {
	switch {
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case isNull(n):
		return "no value"
	}
	return strconv.Quote(n.Value)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func orTop(path string) string {
	if path == "" {
		return "the top level"
	}
	return path
}
