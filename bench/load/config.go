package load

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// Scenario names one load shape; see the package documentation.
type Scenario string

// The scenarios.
const (
	FanIn       Scenario = "fan-in"
	FanOut      Scenario = "fan-out"
	Pairs       Scenario = "pairs"
	Latency     Scenario = "latency"
	Connections Scenario = "connections"
	Overload    Scenario = "overload"
	Causality   Scenario = "causality"
	Storm       Scenario = "storm"
)

// Scenarios lists every scenario, in the order the documentation gives them.
func Scenarios() []Scenario {
	return []Scenario{FanIn, FanOut, Pairs, Latency, Connections, Overload, Causality, Storm}
}

// ErrConfig is wrapped by every error Config.Normalize returns.
var ErrConfig = errors.New("load: bad configuration")

// stampSize is the payload prefix that carries the send time.
const stampSize = 8

// Config describes one run. The zero value of a field means its default,
// which depends on the scenario (see Normalize).
type Config struct {
	Scenario Scenario
	// URL of the broker: mqtt://H:P, mqtts://H:P, ws://H:P/PATH or
	// wss://H:P/PATH. Default mqtt://127.0.0.1:1883.
	URL string
	// SubURL, when set, is where the subscribers connect instead (the
	// publishers still use URL): another node of a cluster, to measure
	// messages that cross nodes.
	SubURL string
	// TLS is used for mqtts:// and wss://. Nil verifies the server with
	// the system roots.
	TLS *tls.Config
	// Protocol is 4 (MQTT 3.1.1, the default) or 5.
	Protocol packet.Version
	// QoS of publishes and subscriptions.
	QoS packet.QoS
	// Size is the payload size in bytes; at least 8 (the send time).
	// Default 64.
	Size int
	// Warmup runs the load before measuring; default 2s. Duration is the
	// measured time (default 10s); for Connections it is how long the
	// connections are held once open (default 5s); for Storm it bounds the
	// wait for every client to be back (default 2m).
	Warmup, Duration time.Duration
	// Window is the most messages one publisher has outstanding (see the
	// package documentation). Default 100 for QoS 1 and 2, 1000 for QoS 0.
	Window int
	// Flat makes QoS 0 publishers send as fast as the broker reads,
	// ignoring the subscribers' progress.
	Flat bool
	// Publishers (P), Subscribers (S), Pairs (N) and Conns (C) are the
	// counts of the scenario that uses them. Defaults: fan-in 8
	// publishers, fan-out 100 subscribers, 50 pairs, overload 8
	// publishers, 1,000 connections.
	Publishers, Subscribers, Pairs, Conns int
	// Rate is the total publish rate in messages per second, shared by
	// the publishers; 0 is as fast as the window allows. Default 1000 for
	// Latency and 100,000 for Overload (a broker without bounds on a slow
	// subscriber's queue must not eat the machine's memory), 0 otherwise.
	Rate float64
	// SubRate is how many messages per second Overload's slow subscriber
	// reads. Default 1000.
	SubRate float64
	// Batch is how many connections Connections opens at once. Default 500.
	Batch int
	// PID is the broker's process id; when set, its RSS is sampled from
	// /proc/PID/status before, during and after the run.
	PID int
	// SysDropped reads $SYS/broker/publish/messages/dropped (Roost and
	// mosquitto both publish it) before and after the run and reports the
	// difference. The broker must publish $SYS often (sys_interval 1s);
	// the run waits for the first update after the load stops.
	SysDropped bool
	// Persistent makes the subscribers (and the connections scenario's
	// clients, whose sessions then stay after the run) keep their
	// sessions: Clean Session 0 (3.1.1), or Clean Start 0 and a Session
	// Expiry that never ends (5.0). Storm's subscribers always do.
	Persistent bool
	// PersistentPublishers makes the traffic scenarios' publishers keep
	// their sessions as Persistent does: a QoS 2 publish of such a session
	// takes a cluster's Origin path (its packet id replicated before the
	// routing, the routed mark after its local copies are durable), which
	// a clean publisher's does not.
	PersistentPublishers bool
	// StopBroker and StartBroker restart the broker in Storm: StopBroker
	// returns once the broker's process has exited, StartBroker once the
	// new one accepts connections. Both are required for Storm.
	StopBroker, StartBroker func(ctx context.Context) error
	// FDLimit overrides the open-file limit the connection count is
	// capped by; 0 reads RLIMIT_NOFILE. For tests.
	FDLimit int
	// Trials is how many Causality trials run at each of Gaps (default
	// 500 each); Gaps are the pauses between the SUBSCRIBE and the PUBLISH
	// (default 50µs, 500µs and 2ms). Idle is how long each pair of
	// connections has been idle before a trial (default 300ms), Quiet how
	// long the whole broker has (default 10ms); Pairs pairs of connections
	// (default enough for both: Idle/Quiet + 1) take turns.
	Trials      int
	Gaps        []time.Duration
	Idle, Quiet time.Duration
	// Progress, when set, is called about once a second from one
	// goroutine while the run goes on.
	Progress func(Progress)
}

// Progress is a snapshot passed to Config.Progress.
type Progress struct {
	Scenario  Scenario
	Phase     string        // "connect", "warmup", "measure", "drain", "hold"
	Elapsed   time.Duration // since the load started
	Published uint64        // messages published so far
	Delivered uint64        // deliveries at subscribers so far
	PubRate   float64       // messages/s published in the last interval
	SubRate   float64       // deliveries/s in the last interval
	Conns     int           // open connections
	RSSKiB    int64         // broker RSS when Config.PID is set
}

// Normalize fills in the defaults for the scenario and checks the values.
// Errors wrap ErrConfig.
func (c Config) Normalize() (Config, error) {
	bad := func(format string, a ...any) (Config, error) {
		return c, fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, a...))
	}
	if c.URL == "" {
		c.URL = "mqtt://127.0.0.1:1883"
	}
	if c.Protocol == 0 {
		c.Protocol = packet.V311
	}
	if c.Protocol != packet.V311 && c.Protocol != packet.V5 {
		return bad("protocol must be 4 or 5, got %d", byte(c.Protocol))
	}
	if c.QoS > 2 {
		return bad("qos must be 0, 1 or 2, got %d", c.QoS)
	}
	if c.Size == 0 {
		c.Size = 64
	}
	if c.Size < stampSize {
		return bad("size must be at least %d bytes (the payload carries the send time), got %d", stampSize, c.Size)
	}
	if c.Size > 16<<20 {
		return bad("size must be at most 16 MiB, got %d", c.Size)
	}
	if c.Warmup == 0 {
		c.Warmup = 2 * time.Second
	}
	if c.Duration == 0 {
		c.Duration = 10 * time.Second
		switch c.Scenario {
		case Connections:
			c.Duration = 5 * time.Second
		case Storm:
			c.Duration = 2 * time.Minute
		}
	}
	if c.Warmup < 0 || c.Duration < 0 || c.Rate < 0 || c.SubRate < 0 {
		return bad("durations and rates must not be negative")
	}
	if c.Window == 0 {
		c.Window = 100
		if c.QoS == 0 {
			c.Window = 1000
		}
	}
	// Packet identifiers are 16 bits; a window near 65535 would wrap onto
	// identifiers still in flight.
	if c.Window < 1 || c.Window > 32768 {
		return bad("window must be 1..32768, got %d", c.Window)
	}
	if c.Publishers < 0 || c.Subscribers < 0 || c.Pairs < 0 || c.Conns < 0 || c.Batch < 0 {
		return bad("counts must not be negative")
	}
	return c.scenarioDefaults()
}

// scenarioDefaults fills in the counts the scenario uses.
func (c Config) scenarioDefaults() (Config, error) {
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	switch c.Scenario {
	case FanIn:
		def(&c.Publishers, 8)
		c.Subscribers = 1
	case FanOut:
		c.Publishers = 1
		def(&c.Subscribers, 100)
	case Pairs:
		def(&c.Pairs, 50)
		c.Publishers, c.Subscribers = c.Pairs, c.Pairs
	case Latency:
		def(&c.Publishers, 1)
		c.Subscribers = 1
		if c.Rate == 0 {
			c.Rate = 1000
		}
	case Overload:
		def(&c.Publishers, 8)
		c.Subscribers = 1
		c.Flat = true
		if c.Rate == 0 {
			c.Rate = 100000
		}
		if c.SubRate == 0 {
			c.SubRate = 1000
		}
	case Causality:
		if c.Quiet == 0 {
			c.Quiet = 10 * time.Millisecond
		}
		if c.Idle == 0 {
			c.Idle = 300 * time.Millisecond
		}
		def(&c.Trials, 500)
		def(&c.Pairs, int(c.Idle/c.Quiet)+1)
		if len(c.Gaps) == 0 {
			c.Gaps = []time.Duration{50 * time.Microsecond, 500 * time.Microsecond, 2 * time.Millisecond}
		}
		if c.Trials < 1 || c.Trials > 100000 || c.Pairs > 1000 || c.Idle < 0 || c.Quiet < 0 {
			return c, fmt.Errorf("%w: causality: trials must be 1..100000, pairs at most 1000, idle and quiet not negative", ErrConfig)
		}
		for _, g := range c.Gaps {
			if g < 0 || g > time.Second {
				return c, fmt.Errorf("%w: causality: gaps must be 0..1s, got %v", ErrConfig, g)
			}
		}
	case Connections:
		def(&c.Conns, 1000)
		def(&c.Batch, 500)
	case Storm:
		def(&c.Conns, 1000)
		c.Persistent = true
		if c.StopBroker == nil || c.StartBroker == nil {
			return c, fmt.Errorf("%w: storm needs a way to stop and start the broker (roost bench --stop-cmd and --start-cmd)", ErrConfig)
		}
	default:
		return c, fmt.Errorf("%w: unknown scenario %q (want one of %v)", ErrConfig, c.Scenario, Scenarios())
	}
	return c, nil
}
