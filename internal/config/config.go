// Package config reads Roost's YAML configuration file and turns it into
// broker.Options.
//
// The file is decoded through yaml.Node rather than into tagged structs so
// that every problem can be reported with the line it is on and the full key
// path (limits.max_queued, listeners[0].url): an unknown key is an error, not
// something silently ignored, because a misspelt limit that quietly keeps its
// default is worse than a refusal to start. All problems in a file are
// reported at once, one per line, in file order.
//
// Every key is optional; Default holds the values used for absent keys and
// takes its limits from broker.DefaultOptions, so the two cannot drift apart.
// The reference for users is docs/config.md.
package config

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/cluster"
	"github.com/roost-mqtt/roost/packet"
	"github.com/roost-mqtt/roost/store"
)

// Config is a parsed configuration file.
type Config struct {
	// Listeners are the addresses to accept clients on. Never empty.
	Listeners []Listener
	Log       Log
	Limits    Limits
	// SysInterval is how often $SYS topics are published; 0 disables them.
	SysInterval time.Duration
	// Retain enables retained messages.
	Retain bool
	// Store is where state is kept across restarts.
	Store Store
	// Auth is authentication and authorization (auth.go).
	Auth Auth
	// HTTP is the metrics, admin API and console server (http.go); off
	// by default.
	HTTP HTTP
	// Bridges are connections to other brokers (bridge.go).
	Bridges []Bridge
	// Path is the file the configuration was loaded from ("" without
	// one), for reloading it.
	Path string
	// Warnings are options read but not used (a mosquitto.conf's
	// log_dest, say), one line each, for the caller to log.
	Warnings []string
	// Cluster makes this node part of a cluster (cluster.go); the zero
	// value is a single node.
	Cluster cluster.Config
	// ClientIDs is what the server does with empty client ids; a
	// listener's own client_ids replace it for its clients.
	ClientIDs ClientIDs
}

// ClientIDs says whether the server assigns a client id to a client that
// sent an empty one, and how the assigned ids start (mosquitto's
// allow_zero_length_clientid and auto_id_prefix).
type ClientIDs struct {
	RefuseEmpty bool   // refuse with CONNACK 0x85 (3.1.1: 0x02) instead
	Prefix      string // "" for the broker's default, "roost-"
	// RequiredPrefix, top level only: client ids must start with it
	// (mosquitto's clientid_prefixes).
	RequiredPrefix string
}

// Log configures the server's log output.
type Log struct {
	Level  slog.Level
	Format LogFormat
}

// Limits mirror the like-named fields of broker.Options; see there and
// docs/config.md for what each does.
type Limits struct {
	MaxPacketSize  uint32
	ReceiveMaximum uint16
	MaxInflight    uint16
	MaxQueued      int
	MaxQueuedBytes int
	// ExpirySweep is how often expired queued messages are removed;
	// negative: never (broker.Options.ExpirySweep).
	ExpirySweep    time.Duration
	QueueQoS0      bool
	MaxTopicLevels int
	MaxConnections int
	// Per-address and per-client limits; 0 means unlimited except for
	// MaxSubscriptions, which must be positive.
	MaxConnectionsPerIP int
	ConnectRatePerIP    float64
	MaxSubscriptions    int
	PublishRate         float64
	ConnectTimeout      time.Duration
	ServerKeepAlive     uint16
	MaxKeepAlive        uint16 // 0 means no cap, as in broker.Options
	MaxSessionExpiry    uint32 // 0 means no cap, as in broker.Options
	TopicAliasMaximum   uint16
	// MaxRetained and MaxRetainedBytes bound retained messages; 0 means
	// unlimited, as for the other limits here (broker.Options reads 0
	// as "default" and a negative value as unlimited).
	MaxRetained      int
	MaxRetainedBytes int
	// MaxInflightBytes bounds the inflight window by payload bytes
	// (broker.Options.MaxInflightBytes); 0: no bound.
	MaxInflightBytes int
	// MaxPayloadSize drops larger PUBLISH payloads (mosquitto's
	// message_size_limit, broker.Options.MaxPayloadSize); 0: no limit.
	MaxPayloadSize int
	// PersistentSessionExpiry ends MQTT 3.1.x persistent sessions
	// offline that long (mosquitto's persistent_client_expiration); 0:
	// never, as the specification has it.
	PersistentSessionExpiry time.Duration
}

// DefaultListenURL is where Roost listens when nothing else is configured.
const DefaultListenURL = "mqtt://0.0.0.0:1883"

// Default returns the configuration used for an empty file.
func Default() *Config {
	o := broker.DefaultOptions()
	ln, err := ParseListener(DefaultListenURL)
	if err != nil {
		panic(err) // a constant that must parse
	}
	return &Config{
		Listeners: []Listener{ln},
		Log:       Log{Level: slog.LevelInfo, Format: LogText},
		Limits: Limits{
			MaxPacketSize:     o.MaxPacketSize,
			ReceiveMaximum:    o.ReceiveMaximum,
			MaxInflight:       o.MaxInflight,
			MaxQueued:         o.MaxQueued,
			MaxQueuedBytes:    o.MaxQueuedBytes,
			ExpirySweep:       o.ExpirySweep,
			QueueQoS0:         o.QueueQoS0,
			MaxTopicLevels:    o.MaxTopicLevels,
			MaxConnections:    o.MaxConnections,
			MaxSubscriptions:  o.MaxSubscriptions,
			ConnectTimeout:    o.ConnectTimeout,
			ServerKeepAlive:   o.ServerKeepAlive,
			MaxKeepAlive:      o.MaxKeepAlive,
			MaxSessionExpiry:  o.MaxSessionExpiry,
			TopicAliasMaximum: o.TopicAliasMaximum,
			MaxRetained:       o.MaxRetained,
			MaxRetainedBytes:  o.MaxRetainedBytes,
		},
		SysInterval: o.SysInterval,
		Retain:      !o.DisableRetain,
		ClientIDs:   ClientIDs{Prefix: o.AutoIDPrefix},
		Store:       Store{Data: DefaultDataDir, MinFree: store.DefaultMinFree, Ballast: store.DefaultBallast},
	}
}

// Load reads and parses the file at path. Problems in the file are reported
// as *Error values (joined with errors.Join when there are several) whose
// text starts with the file's base name and the line; a file that cannot be
// read gives the os error.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if IsMosquitto(data) {
		// Paths in a mosquitto.conf are taken as mosquitto takes them.
		c, err := ParseMosquitto(path, data)
		if c != nil {
			c.Path = path
		}
		return c, err
	}
	c, err := Parse(filepath.Base(path), data)
	if err != nil {
		return nil, err
	}
	c.Path = path
	c.Store.resolveData(filepath.Dir(path))
	c.resolveClusterData(filepath.Dir(path))
	c.Auth.resolvePaths(filepath.Dir(path))
	for i := range c.Listeners {
		c.Listeners[i].TLS.resolvePaths(filepath.Dir(path))
		if d := &c.Listeners[i].WS.HTTPDir; *d != "" && !filepath.IsAbs(*d) {
			*d = filepath.Join(filepath.Dir(path), *d)
		}
		if a := c.Listeners[i].Auth; a != nil {
			a.resolvePaths(filepath.Dir(path))
		}
	}
	for i := range c.Bridges {
		c.Bridges[i].TLS.resolvePaths(filepath.Dir(path))
	}
	return c, nil
}

// BrokerOptions converts c to broker.Options, logging to logger (nil means
// slog.Default()). The Store is left nil: the caller opens the one
// c.Store describes.
func (c *Config) BrokerOptions(logger *slog.Logger) broker.Options {
	l := c.Limits
	sys := c.SysInterval
	if sys <= 0 {
		sys = -1 // broker.Options reads 0 as "default"; negative disables
	}
	return broker.Options{
		Logger:              logger,
		MaxPacketSize:       l.MaxPacketSize,
		ReceiveMaximum:      l.ReceiveMaximum,
		MaxInflight:         l.MaxInflight,
		MaxQueued:           l.MaxQueued,
		MaxQueuedBytes:      l.MaxQueuedBytes,
		ExpirySweep:         l.ExpirySweep,
		QueueQoS0:           l.QueueQoS0,
		MaxTopicLevels:      l.MaxTopicLevels,
		MaxConnections:      l.MaxConnections,
		MaxConnectionsPerIP: l.MaxConnectionsPerIP,
		ConnectRatePerIP:    l.ConnectRatePerIP,
		MaxSubscriptions:    l.MaxSubscriptions,
		PublishRate:         l.PublishRate,
		ConnectTimeout:      l.ConnectTimeout,
		ServerKeepAlive:     l.ServerKeepAlive,
		MaxKeepAlive:        l.MaxKeepAlive,
		MaxSessionExpiry:    l.MaxSessionExpiry,
		TopicAliasMaximum:   l.TopicAliasMaximum,
		MaxRetained:         unlimitedIfZero(l.MaxRetained),
		MaxRetainedBytes:    unlimitedIfZero(l.MaxRetainedBytes),
		SysInterval:         sys,
		DisableRetain:       !c.Retain,
		MaxPayloadSize:      l.MaxPayloadSize,
		MaxInflightBytes:    l.MaxInflightBytes,
		// Rounded up: a session is never ended before its time.
		PersistentSessionExpiry: uint32(min((l.PersistentSessionExpiry+time.Second-1)/time.Second, 0xFFFFFFFE)),
		RefuseEmptyClientID:     c.ClientIDs.RefuseEmpty,
		AutoIDPrefix:            c.ClientIDs.Prefix,
		ClientIDPrefix:          c.ClientIDs.RequiredPrefix,
		CheckRetainSource:       c.Auth.CheckRetainSource,
		Listeners:               c.listenerPolicies(),
	}
}

// listenerPolicies are the broker.ListenerPolicy of the listeners that
// have a mount point or their own client_ids, by listener name.
func (c *Config) listenerPolicies() map[string]broker.ListenerPolicy {
	var ps map[string]broker.ListenerPolicy
	for _, ln := range c.Listeners {
		if ln.MountPoint == "" && ln.ClientIDs == nil && !ln.UsernameAsClientID && ln.MaxQoS == nil && ln.TopicAliasMaximum == nil {
			continue
		}
		p := broker.ListenerPolicy{MountPoint: ln.MountPoint, UsernameAsClientID: ln.UsernameAsClientID}
		if ln.MaxQoS != nil {
			p.LimitQoS, p.MaxQoS = true, packet.QoS(*ln.MaxQoS)
		}
		if ln.TopicAliasMaximum != nil {
			p.LimitAliases, p.AliasMaximum = true, uint16(*ln.TopicAliasMaximum)
		}
		if ids := ln.ClientIDs; ids != nil {
			p.ClientIDs, p.RefuseEmptyClientID, p.AutoIDPrefix = true, ids.RefuseEmpty, ids.Prefix
		}
		if ps == nil {
			ps = make(map[string]broker.ListenerPolicy)
		}
		ps[ln.ID()] = p
	}
	return ps
}

// unlimitedIfZero turns the config's 0 = unlimited into broker.Options'
// negative = unlimited (0 there means "default").
func unlimitedIfZero(n int) int {
	if n == 0 {
		return -1
	}
	return n
}

// Error is one problem at one line of a configuration file.
type Error struct {
	File string // base name of the file; empty when parsed from bytes
	Line int
	Msg  string // names the key path, e.g. `limits.max_queued: must be ...`
}

func (e *Error) Error() string {
	if e.File == "" {
		return fmt.Sprintf("line %d: %s", e.Line, e.Msg)
	}
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
}
