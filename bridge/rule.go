package bridge

import (
	"errors"
	"fmt"
	"strings"

	"github.com/roost-mqtt/roost/packet"
	"github.com/roost-mqtt/roost/topic"
)

// Direction says which way a Rule forwards messages.
type Direction uint8

// Directions, as mosquitto's topic lines name them.
const (
	// Out forwards messages published on this broker to the remote one.
	Out Direction = iota + 1
	// In forwards messages published on the remote broker to this one.
	In
	// Both forwards both ways.
	Both
)

// ParseDirection reads "out", "in" or "both".
func ParseDirection(s string) (Direction, error) {
	switch s {
	case "out":
		return Out, nil
	case "in":
		return In, nil
	case "both":
		return Both, nil
	}
	return 0, fmt.Errorf("direction %q: want out, in or both", s)
}

func (d Direction) String() string {
	switch d {
	case Out:
		return "out"
	case In:
		return "in"
	case Both:
		return "both"
	}
	return fmt.Sprintf("Direction(%d)", uint8(d))
}

func (d Direction) out() bool { return d == Out || d == Both }
func (d Direction) in() bool  { return d == In || d == Both }

// Rule is one topic line of a bridge, with mosquitto's meaning
// (mosquitto.conf(5), "topic pattern [[[out | in | both] qos-level]
// local-prefix remote-prefix]"):
//
//   - The bridge subscribes to LocalPrefix+Pattern on this broker (for Out
//     and Both) and to RemotePrefix+Pattern on the remote one (In and
//     Both), at QoS; a message is forwarded at the QoS it arrived with,
//     which the subscription caps.
//   - A message forwarded out loses LocalPrefix from the front of its
//     topic and gains RemotePrefix; one forwarded in loses RemotePrefix and
//     gains LocalPrefix. The first rule of the right direction that has a
//     prefix and whose filter matches decides; a topic no such rule
//     matches is forwarded unchanged.
//   - An empty Pattern with both prefixes maps one topic onto another:
//     LocalPrefix is the whole local topic, RemotePrefix the remote one.
//   - Prefixes are topic names (no wildcards) and prefix+pattern must be a
//     valid filter; an empty Pattern needs both prefixes.
type Rule struct {
	Pattern      string
	Direction    Direction
	QoS          packet.QoS
	LocalPrefix  string
	RemotePrefix string
}

// ErrBadRule is wrapped by the errors Validate returns.
var ErrBadRule = errors.New("invalid bridge topic")

// Validate checks r as mosquitto does when it reads a topic line.
func (r Rule) Validate() error {
	if !r.Direction.in() && !r.Direction.out() {
		return fmt.Errorf("%w: no direction", ErrBadRule)
	}
	if r.QoS > 2 {
		return fmt.Errorf("%w: QoS %d", ErrBadRule, r.QoS)
	}
	for _, p := range []struct{ name, v string }{{"local", r.LocalPrefix}, {"remote", r.RemotePrefix}} {
		if p.v == "" {
			continue
		}
		if err := topic.ValidName(p.v, 0); err != nil {
			return fmt.Errorf("%w: %s prefix %q: %w", ErrBadRule, p.name, p.v, err)
		}
		if err := topic.ValidFilter(p.v+r.Pattern, 0); err != nil {
			return fmt.Errorf("%w: %s prefix and pattern %q: %w", ErrBadRule, p.name, p.v+r.Pattern, err)
		}
	}
	if r.Pattern == "" && (r.LocalPrefix == "" || r.RemotePrefix == "") {
		return fmt.Errorf("%w: an empty pattern needs both a local and a remote prefix", ErrBadRule)
	}
	if err := topic.ValidFilter(r.Pattern, 0); r.Pattern != "" && err != nil {
		return fmt.Errorf("%w: pattern %q: %w", ErrBadRule, r.Pattern, err)
	}
	return nil
}

// LocalFilter is what the bridge subscribes to on this broker.
func (r Rule) LocalFilter() string { return r.LocalPrefix + r.Pattern }

// RemoteFilter is what the bridge subscribes to on the remote broker.
func (r Rule) RemoteFilter() string { return r.RemotePrefix + r.Pattern }

func (r Rule) remaps() bool { return r.LocalPrefix != "" || r.RemotePrefix != "" }

// mapOut returns the remote topic for a local one.
func mapOut(rules []Rule, name string) string {
	for _, r := range rules {
		if r.Direction.out() && r.remaps() && topic.Match(r.LocalFilter(), name) {
			return r.RemotePrefix + strings.TrimPrefix(name, r.LocalPrefix)
		}
	}
	return name
}

// mapIn returns the local topic for a remote one.
func mapIn(rules []Rule, name string) string {
	for _, r := range rules {
		if r.Direction.in() && r.remaps() && topic.Match(r.RemoteFilter(), name) {
			return r.LocalPrefix + strings.TrimPrefix(name, r.RemotePrefix)
		}
	}
	return name
}
