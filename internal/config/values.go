package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// scalar reports whether v is a non-null scalar, recording an error that
// says what was wanted (e.g. "a URL") if it is not.
func (d *decoder) scalar(v *yaml.Node, path, want string) bool {
	if v.Kind == yaml.ScalarNode && !isNull(v) {
		return true
	}
	d.errorf(v, "%s: must be %s, got %s", path, want, describe(v))
	return false
}

// integer parses a YAML integer in [min, max].
func (d *decoder) integer(v *yaml.Node, path string, min, max int64) (int64, bool) {
	var n int64
	if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!int" || v.Decode(&n) != nil || n < min || n > max {
		d.errorf(v, "%s: must be %s, got %s", path, intRange(min, max), describe(v))
		return 0, false
	}
	return n, true
}

func intRange(min, max int64) string {
	if min == 1 && max >= math.MaxInt32 {
		return "a positive integer"
	}
	return fmt.Sprintf("an integer from %d to %d", min, max)
}

// size parses a byte count: a plain integer or one with a KiB, MiB or GiB
// suffix ("512KiB", "1 MiB"), from 1 to max.
func (d *decoder) size(v *yaml.Node, path string, max uint64, dst *uint32) {
	if n, ok := d.bytes(v, path, 1, max); ok {
		*dst = uint32(n)
	}
}

// bytes parses a byte count like size, from min to max.
func (d *decoder) bytes(v *yaml.Node, path string, min, max uint64) (uint64, bool) {
	n, err := parseSize(v)
	switch {
	case err != nil:
		d.errorf(v, "%s: must be a size such as 65536, 512KiB or 1MiB, got %s", path, describe(v))
	case n < min || n > max:
		from := fmt.Sprintf("%d", min)
		if min == 1 {
			from = "1 byte"
		}
		d.errorf(v, "%s: must be from %s to %d bytes, got %s", path, from, max, describe(v))
	default:
		return n, true
	}
	return 0, false
}

var sizeUnits = []struct {
	suffix string
	mult   uint64
}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}}

func parseSize(v *yaml.Node) (uint64, error) {
	if v.Kind != yaml.ScalarNode || isNull(v) {
		return 0, fmt.Errorf("not a scalar")
	}
	return ParseSize(v.Value)
}

// ParseSize parses a byte count: a plain integer or one with a KiB, MiB or
// GiB suffix ("512KiB", "1 MiB"). A count too large for a uint64 gives
// math.MaxUint64, which is out of any range.
func ParseSize(s string) (uint64, error) {
	s, mult := strings.TrimSpace(s), uint64(1)
	for _, u := range sizeUnits {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(num), u.mult
			break
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: want a number of bytes, optionally with KiB, MiB or GiB", s)
	}
	if n > math.MaxUint64/mult {
		return math.MaxUint64, nil
	}
	return n * mult, nil
}

// duration parses a Go duration ("10s", "1m30s"; "0" is allowed) of at
// least min.
func (d *decoder) duration(v *yaml.Node, path string, min time.Duration, dst *time.Duration) {
	var t time.Duration
	var err error
	if v.Kind != yaml.ScalarNode || isNull(v) {
		err = fmt.Errorf("not a scalar")
	} else {
		t, err = time.ParseDuration(strings.TrimSpace(v.Value))
	}
	switch {
	case err != nil:
		d.errorf(v, "%s: must be a duration such as 10s or 1m30s, got %s", path, describe(v))
	case t < min && min > 0:
		d.errorf(v, "%s: must be a positive duration such as 10s, got %s", path, describe(v))
	case t < min:
		d.errorf(v, "%s: must not be negative, got %s", path, describe(v))
	default:
		*dst = t
	}
}

// boolean accepts YAML's true and false.
func (d *decoder) boolean(v *yaml.Node, path string, dst *bool) {
	var b bool
	if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!bool" || v.Decode(&b) != nil {
		d.errorf(v, "%s: must be true or false, got %s", path, describe(v))
		return
	}
	*dst = b
}

// rate is a non-negative number per second; 0 means unlimited.
func (d *decoder) rate(v *yaml.Node, path string, dst *float64) {
	var f float64
	tag := v.ShortTag()
	if v.Kind != yaml.ScalarNode || (tag != "!!int" && tag != "!!float") || v.Decode(&f) != nil || f < 0 || f != f {
		d.errorf(v, "%s: must be a number per second >= 0 (0: unlimited), got %s", path, describe(v))
		return
	}
	*dst = f
}
