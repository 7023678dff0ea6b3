package jepsen

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"time"
)

// Nodes is the system under test: the MQTT address of each node and the
// faults the nemesis causes. Addresses stay the same across restarts.
// Every method returns within its own bound.
type Nodes interface {
	Addrs() []string
	// Kill ends node i with SIGKILL and waits until it is gone.
	Kill(i int) error
	// Start starts node i again on its data and waits until it serves.
	Start(ctx context.Context, i int) error
	// Pause stops node i (SIGSTOP); Resume continues it (SIGCONT).
	Pause(i int) error
	Resume(i int) error
}

// Partitioner is a Nodes that can also cut node i off from the others
// (and from the clients of the others) and heal every cut.
type Partitioner interface {
	Isolate(i int) error
	Heal() error
}

// Fault is one kind of fault the nemesis causes.
type Fault string

// The nemesis' faults.
const (
	Kill    Fault = "kill"    // SIGKILL, later a restart on the same data
	Pause   Fault = "pause"   // SIGSTOP, later SIGCONT
	Isolate Fault = "isolate" // a partition of one node from the rest, later healed
)

// Span is a random duration in [Min, Max].
type Span struct{ Min, Max time.Duration }

func (s Span) pick(r *rand.Rand) time.Duration {
	if s.Max <= s.Min {
		return s.Min
	}
	return s.Min + time.Duration(r.Int64N(int64(s.Max-s.Min)))
}

// Config is a run's workload and nemesis. NewConfig gives the defaults
// of the short run.
type Config struct {
	Seed     uint64
	Duration time.Duration // the workload under faults

	Publishers int // QoS 1 and 2, alternately chosen at random
	// PersistentPublishers of the Publishers keep their session and
	// resend what was unacknowledged when they reconnect.
	PersistentPublishers int
	Rate                 float64 // messages per second per publisher
	Topics               int     // t/0 .. t/Topics-1
	Window               int     // unacknowledged publishes per publisher connection

	Persistent int // persistent subscribers on t/#; the last one at QoS 1, the others QoS 2
	Clean      int // clean subscribers on t/# at QoS 2
	Groups     int // shared groups on $share/gN/t/# at QoS 2
	Members    int // persistent members per group

	RetainedTopics int     // r/0 .. r/RetainedTopics-1, registers
	Writers        int     // retained QoS 1 writers
	WriteRate      float64 // writes per second per writer
	Readers        int     // retained readers (SUBSCRIBE, the retained message, UNSUBSCRIBE)

	// Reconnect is how long a subscriber stays connected before it leaves
	// (DISCONNECT or a bare close, at random) and reconnects to a random
	// node of SessionNodes (persistent and shared) or of all (clean).
	Reconnect Span
	// SessionNodes are the nodes persistent sessions live on (nil: all).
	SessionNodes []int
	// RetainedNodes are the nodes retained writers and readers use (nil: all).
	RetainedNodes []int

	Faults     []Fault
	FaultNodes []int // the nodes the nemesis may hit (nil: all)
	FaultEvery Span  // quiet time between two faults
	FaultFor   Span  // how long a fault lasts
	// LongFaults is the share of faults (0 to 1) that last LongFaultFor
	// instead: past the cluster's heartbeat timeout (4 s), when the
	// others drop the node, and its adopt_after (10 s), when they adopt
	// its sessions. Faults shorter than the heartbeat timeout never make
	// the others hold for a node or adopt its sessions.
	LongFaults   float64
	LongFaultFor Span

	// OpTimeout: a publisher whose oldest unacknowledged publish is older
	// closes the connection; the publishes become unknown.
	OpTimeout time.Duration
	// Drain bounds the wait, after healing, for any of what a persistent
	// subscriber or group still lacks to arrive (the drain ends after a
	// Drain without progress, and after drainCap Drains in all).
	Drain time.Duration
	// Setup bounds connecting every subscriber and writing the first
	// retained values (nodes may still be electing leaders).
	Setup time.Duration

	Logger *slog.Logger
}

// NewConfig is the short run's configuration with seed: three publishers
// (one of them persistent) at 20 messages per second each, four persistent, two clean
// subscribers, two shared groups of two, three retained topics, and a
// kill or pause every 2-5 s, lasting 0.3-2 s.
func NewConfig(seed uint64) Config {
	return Config{
		Seed: seed, Duration: 60 * time.Second,
		Publishers: 3, PersistentPublishers: 1, Rate: 20, Topics: 4, Window: 8,
		Persistent: 4, Clean: 2, Groups: 2, Members: 2,
		RetainedTopics: 3, Writers: 2, WriteRate: 4, Readers: 2,
		Reconnect:  Span{time.Second, 4 * time.Second},
		Faults:     []Fault{Kill, Pause},
		FaultEvery: Span{2 * time.Second, 5 * time.Second},
		FaultFor:   Span{300 * time.Millisecond, 2 * time.Second},
		OpTimeout:  5 * time.Second,
		Drain:      30 * time.Second,
		Setup:      30 * time.Second,
	}
}

func (c *Config) validate(nodes int) error {
	for _, n := range slices.Concat(c.SessionNodes, c.RetainedNodes, c.FaultNodes) {
		if n < 0 || n >= nodes {
			return fmt.Errorf("jepsen: node %d out of range (%d nodes)", n, nodes)
		}
	}
	switch {
	case c.Duration <= 0, c.Drain <= 0, c.Setup <= 0, c.OpTimeout <= 0:
		return fmt.Errorf("jepsen: Duration, Drain, Setup and OpTimeout must be positive")
	case c.Publishers > 0 && (c.Rate <= 0 || c.Topics <= 0 || c.Window <= 0):
		return fmt.Errorf("jepsen: publishers need a Rate, Topics and a Window")
	case c.Writers > 0 && (c.WriteRate <= 0 || c.RetainedTopics <= 0):
		return fmt.Errorf("jepsen: writers need a WriteRate and RetainedTopics")
	case c.Readers > 0 && c.RetainedTopics <= 0:
		return fmt.Errorf("jepsen: readers need RetainedTopics")
	case c.Reconnect.Min <= 0:
		return fmt.Errorf("jepsen: Reconnect.Min must be positive")
	case len(c.Faults) > 0 && c.FaultFor.Min <= 0:
		return fmt.Errorf("jepsen: FaultFor.Min must be positive")
	case c.LongFaults < 0 || c.LongFaults > 1:
		return fmt.Errorf("jepsen: LongFaults must be within 0 and 1")
	case c.LongFaults > 0 && c.LongFaultFor.Min <= 0:
		return fmt.Errorf("jepsen: LongFaultFor.Min must be positive")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

func all(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}
