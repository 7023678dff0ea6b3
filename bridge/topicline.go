package bridge

import (
	"fmt"
	"strings"

	"github.com/roost-mqtt/roost/packet"
)

// ParseTopicLine reads the value of a mosquitto "topic" line: pattern
// [[[out | in | both] qos-level] local-prefix remote-prefix], fields
// separated by spaces, "" standing for an empty field. Direction
// defaults to out and QoS to 0, as in mosquitto. The Rule is validated.
func ParseTopicLine(s string) (Rule, error) {
	f := strings.Fields(s)
	if len(f) == 0 || len(f) > 5 {
		return Rule{}, fmt.Errorf("%w: %q: want pattern [[[out|in|both] qos] local-prefix remote-prefix]", ErrBadRule, s)
	}
	for i := range f {
		if f[i] == `""` {
			f[i] = ""
		}
	}
	r := Rule{Pattern: f[0], Direction: Out}
	if len(f) > 1 {
		d, err := ParseDirection(f[1])
		if err != nil {
			return Rule{}, fmt.Errorf("%w: %w", ErrBadRule, err)
		}
		r.Direction = d
	}
	if len(f) > 2 {
		if len(f[2]) != 1 || f[2][0] < '0' || f[2][0] > '2' {
			return Rule{}, fmt.Errorf("%w: QoS %q: want 0, 1 or 2", ErrBadRule, f[2])
		}
		r.QoS = packet.QoS(f[2][0] - '0')
	}
	if len(f) > 3 {
		r.LocalPrefix = f[3]
	}
	if len(f) > 4 {
		r.RemotePrefix = f[4]
	}
	return r, r.Validate()
}

// String returns r as a mosquitto topic line value.
func (r Rule) String() string {
	q := func(s string) string {
		if s == "" {
			return `""`
		}
		return s
	}
	s := fmt.Sprintf("%s %s %d", q(r.Pattern), r.Direction, r.QoS)
	if r.LocalPrefix != "" || r.RemotePrefix != "" {
		s += " " + q(r.LocalPrefix) + " " + q(r.RemotePrefix)
	}
	return s
}
