package cluster

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"time"
)

// Config describes one node of a cluster. The zero Config is not a
// cluster: Enabled reports false and a node runs alone, with no NATS code.
type Config struct {
	// Name is the cluster's name; nodes with another name refuse to join.
	// Default "roost".
	Name string
	// Node is this node's name, unique in the cluster: letters, digits,
	// '-' and '_'. It names the node in subjects, logs and the engine's
	// Raft groups, so it must stay the same across restarts.
	Node string
	// Listen is HOST:PORT for the other nodes' connections. HOST must be a
	// concrete address: every connection this node opens to a peer is
	// bound to it, so that per-address firewall rules see the node (and
	// nodes on 127.0.0.2, .3 and .4 of one machine act as separate hosts).
	Listen string
	// Peers are the other nodes' Listen addresses.
	Peers []string
	// Replicas is how many copies JetStream keeps of the cluster's
	// replicated state. Default 3; fewer needs Unsafe.
	Replicas int
	// Data is the directory of the engine's JetStream store. Required.
	Data string
	// SyncInterval is how often JetStream syncs its files. The default, 0,
	// means on every write ("always"); anything else needs Unsafe, because
	// a power failure of a majority could then lose acknowledged writes.
	SyncInterval time.Duration
	// TLS secures the cluster port with mutual TLS (security.go).
	TLS TLS
	// SecretFile names a file holding a secret every node shares (at
	// least 16 bytes): a node that does not present it cannot open a
	// route.
	SecretFile string
	// Unsafe allows Replicas < 3, a SyncInterval, and a Listen address
	// other hosts can reach without TLS and a secret: settings under which
	// the loss of one node or a power failure can lose acknowledged state,
	// or a stranger can join the cluster and read its messages.
	Unsafe bool
	// TombstoneTTL is how long the clearing of a retained message stays
	// in the retained stream (default 1h). A node that starts again later
	// clears what it kept from before by itself; one that runs but cannot
	// follow the stream for longer may miss the clearing.
	TombstoneTTL time.Duration
	// ForwardTimeout bounds how long a QoS 1/2 publish waits for the
	// nodes it was forwarded to (and the retained stream), and how long a
	// CONNECT waits for its client-id owner record. Default 5s.
	ForwardTimeout time.Duration
	// Partitions is the number of streams persistent sessions are spread
	// over (sessions.go), fixed when the cluster is created: every node
	// must use the same number for the life of its data. Default 8.
	Partitions int
	// AdoptAfter is how long a node must have been gone (after it is
	// noticed gone) before the survivors adopt its persistent sessions,
	// publishing their wills and running their expiry (janitor.go).
	// Default 10s.
	AdoptAfter time.Duration
	// ReplaceAfter is how long a node must have been silent (once
	// noticed) before the JetStream meta leader places the replicas it
	// held on other nodes (placement.go). Default 15s.
	ReplaceAfter time.Duration
}

// Enabled reports whether c asks for a cluster at all.
func (c *Config) Enabled() bool {
	return c.Node != "" || c.Listen != "" || len(c.Peers) > 0
}

// DefaultName is the cluster name when none is given.
const DefaultName = "roost"

// DefaultTombstoneTTL is how long a retained message's clearing stays in
// the retained stream when Config.TombstoneTTL is not set.
const DefaultTombstoneTTL = time.Hour

// DefaultAdoptAfter is Config.AdoptAfter when none is given: longer than a
// short pause or a restart, which should not move every session of the
// node.
const DefaultAdoptAfter = 10 * time.Second

// DefaultReplaceAfter is Config.ReplaceAfter when none is given. Moving a
// replica copies the whole object to its new node, and a node that comes
// back afterwards is no longer a member: worth it for a node that is gone,
// not for a pause or a restart (a restart of a node with its data takes a
// few seconds; a SIGSTOP'd or frozen VM resumes). It is longer than
// AdoptAfter's default: the sessions of a gone node are adopted first
// (their clients are waiting), its replicas moved after (the objects are
// still writable with two members of three meanwhile).
const DefaultReplaceAfter = 15 * time.Second

// DefaultPartitions is the number of session streams when none is given.
const DefaultPartitions = 8

// DefaultReplicas is the replica count when none is given.
const DefaultReplicas = 3

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ErrUnsafe is wrapped by Check's errors for settings weaker than the
// cluster's promises need.
var ErrUnsafe = errors.New("weaker than safe; set cluster.unsafe: true to accept the risk")

// Check fills in defaults and reports the first setting that cannot work,
// or one weaker than safe without Unsafe.
func (c *Config) Check() error {
	if c.Name == "" {
		c.Name = DefaultName
	}
	if c.Replicas == 0 {
		c.Replicas = DefaultReplicas
	}
	if c.Partitions == 0 {
		c.Partitions = DefaultPartitions
	}
	if c.AdoptAfter == 0 {
		c.AdoptAfter = DefaultAdoptAfter
	}
	if c.ReplaceAfter == 0 {
		c.ReplaceAfter = DefaultReplaceAfter
	}
	if c.ForwardTimeout == 0 {
		c.ForwardTimeout = 5 * time.Second
	}
	if c.TombstoneTTL == 0 {
		c.TombstoneTTL = DefaultTombstoneTTL
	}
	switch {
	case !nameRE.MatchString(c.Name):
		return fmt.Errorf("cluster name %q: want 1-64 letters, digits, '-' or '_'", c.Name)
	case !nameRE.MatchString(c.Node):
		return fmt.Errorf("cluster node %q: want 1-64 letters, digits, '-' or '_'", c.Node)
	case c.Data == "":
		return errors.New("cluster: a data directory is needed for the engine's store")
	case c.AdoptAfter < time.Second:
		return fmt.Errorf("cluster adopt_after %v: at least 1s", c.AdoptAfter)
	case c.ReplaceAfter < time.Second:
		return fmt.Errorf("cluster replace_after %v: at least 1s", c.ReplaceAfter)
	case c.Partitions < 1 || c.Partitions > 1024:
		return fmt.Errorf("cluster partitions %d: want 1 to 1024", c.Partitions)
	case c.Replicas < 1 || c.Replicas > 5:
		return fmt.Errorf("cluster replicas %d: want 1 to 5 (JetStream's limit)", c.Replicas)
	case c.Replicas < 3 && !c.Unsafe:
		return fmt.Errorf("cluster replicas %d: the loss of one node could lose acknowledged state: %w", c.Replicas, ErrUnsafe)
	case c.TombstoneTTL < time.Second:
		return fmt.Errorf("cluster retained tombstone ttl %v: at least 1s (JetStream's unit)", c.TombstoneTTL)
	case c.SyncInterval < 0:
		return fmt.Errorf("cluster sync interval %v: must not be negative", c.SyncInterval)
	case c.SyncInterval > 0 && !c.Unsafe:
		return fmt.Errorf("cluster sync interval %v: a power failure could lose acknowledged state (the default syncs every write): %w", c.SyncInterval, ErrUnsafe)
	}
	if err := checkHostPort(c.Listen, true); err != nil {
		return fmt.Errorf("cluster listen: %w", err)
	}
	if err := c.TLS.check(); err != nil {
		return err
	}
	if !isLoopback(c.Listen) && (!c.TLS.enabled() || c.SecretFile == "") && !c.Unsafe {
		// Loopback is reachable from this host only, which is how tests
		// and a try on one machine run.
		return fmt.Errorf("cluster listen %s without tls and secret_file: whoever reaches the port could join the cluster and read its messages: %w", c.Listen, ErrUnsafe)
	}
	for _, p := range c.Peers {
		if err := checkHostPort(p, false); err != nil {
			return fmt.Errorf("cluster peer: %w", err)
		}
		if p == c.Listen {
			return fmt.Errorf("cluster peer %s is this node's own listen address", p)
		}
	}
	return nil
}

// checkHostPort checks a HOST:PORT; bind says it is an address to listen on
// and bind to, which must be a concrete IP (not a wildcard, not a name).
func checkHostPort(s string, bind bool) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("want HOST:PORT, got %q: %w", s, err)
	}
	if port == "" || port == "0" {
		return fmt.Errorf("%q: a fixed port is needed (peers name it)", s)
	}
	if !bind {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || ip.IsUnspecified() {
		return fmt.Errorf("%q: want this node's own IP address, which outgoing cluster connections are bound to", s)
	}
	return nil
}
