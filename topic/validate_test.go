package topic

import (
	"errors"
	"strings"
	"testing"
)

func TestValidName(t *testing.T) {
	tests := []struct {
		rule      string
		name      string
		maxLevels int
		want      error
	}{
		{"plain", "a/b/c", 0, nil},
		{"empty levels allowed", "a//b", 0, nil},
		{"only separator", "/", 0, nil},
		{"leading separator", "/finance", 0, nil},
		{"trailing separator", "finance/", 0, nil},
		{"dollar topic", "$SYS/broker/uptime", 0, nil},
		{"space and unicode", "sport/tennis player/ünïcødé/😀", 0, nil},
		{"MQTT-4.7.3-1 empty", "", 0, ErrEmpty},
		{"MQTT-3.3.2-2 plus", "a/+/b", 0, ErrWildcardInName},
		{"MQTT-3.3.2-2 hash", "a/#", 0, ErrWildcardInName},
		{"MQTT-3.3.2-2 plus inside level", "a+b", 0, ErrWildcardInName},
		{"MQTT-1.5.4-2 null", "a/\x00", 0, ErrNullChar},
		{"MQTT-1.5.4-1 bad UTF-8", "a/\xff", 0, ErrBadUTF8},
		{"MQTT-1.5.4-1 surrogate", "a/\xed\xa0\x80", 0, ErrBadUTF8},
		{"MQTT-4.7.3-3 max length", strings.Repeat("a", 65535), 0, nil},
		{"MQTT-4.7.3-3 too long", strings.Repeat("a", 65536), 0, ErrTooLong},
		{"levels at limit", "a/b/c", 3, nil},
		{"levels over limit", "a/b/c/", 3, ErrTooManyLevels},
		{"no level limit", strings.Repeat("/", 1000), 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.rule, func(t *testing.T) {
			if err := ValidName(tt.name, tt.maxLevels); !errors.Is(err, tt.want) || (err == nil) != (tt.want == nil) {
				t.Errorf("ValidName(%.20q, %d) = %v, want %v", tt.name, tt.maxLevels, err, tt.want)
			}
		})
	}
}

func TestValidFilter(t *testing.T) {
	tests := []struct {
		rule      string
		filter    string
		maxLevels int
		want      error
	}{
		{"plain", "a/b", 0, nil},
		{"MQTT-4.7.1-1 hash alone", "#", 0, nil},
		{"MQTT-4.7.1-1 hash last", "sport/tennis/#", 0, nil},
		{"MQTT-4.7.1-1 hash after empty level", "/#", 0, nil},
		{"MQTT-4.7.1-1 hash in level", "sport/tennis#", 0, ErrBadWildcard},
		{"MQTT-4.7.1-1 hash not last", "sport/tennis/#/ranking", 0, ErrBadWildcard},
		{"MQTT-4.7.1-1 hash then separator", "#/", 0, ErrBadWildcard},
		{"MQTT-4.7.1-1 double hash", "##", 0, ErrBadWildcard},
		{"MQTT-4.7.1-2 plus alone", "+", 0, nil},
		{"MQTT-4.7.1-2 plus levels", "+/tennis/#", 0, nil},
		{"MQTT-4.7.1-2 plus plus", "+/+", 0, nil},
		{"MQTT-4.7.1-2 plus empty level", "/+/", 0, nil},
		{"MQTT-4.7.1-2 plus in level", "sport+", 0, ErrBadWildcard},
		{"MQTT-4.7.1-2 plus prefix", "sport/+a", 0, ErrBadWildcard},
		{"MQTT-4.7.1-2 double plus", "a/++", 0, ErrBadWildcard},
		{"MQTT-4.7.3-1 empty", "", 0, ErrEmpty},
		{"MQTT-4.7.3-2 null", "a/\x00/b", 0, ErrNullChar},
		{"MQTT-1.5.4-1 bad UTF-8", "\xc3", 0, ErrBadUTF8},
		{"MQTT-4.7.3-3 max length", strings.Repeat("a", 65535), 0, nil},
		{"MQTT-4.7.3-3 too long", strings.Repeat("a", 65536), 0, ErrTooLong},
		{"levels at limit", "a/+/#", 3, nil},
		{"levels over limit", "a/+/#", 2, ErrTooManyLevels},
		{"dollar filter", "$SYS/#", 0, nil},
		{"$share alone is a plain filter", "$share", 0, nil},
		{"MQTT-4.8.2 shared", "$share/g/a/+", 0, nil},
		{"MQTT-4.8.2 shared levels counted after ShareName", "$share/g/a/+", 2, nil},
		{"MQTT-4.8.2 shared over level limit", "$share/g/a/+/c", 2, ErrTooManyLevels},
		{"MQTT-4.8.2-1 shared no filter", "$share/g", 0, ErrBadShare},
		{"MQTT-4.8.2-1 shared empty ShareName", "$share//a", 0, ErrBadShare},
		{"MQTT-4.8.2 shared filter breaks MQTT-4.7.1-1", "$share/g/a#", 0, ErrBadWildcard},
		{"MQTT-4.8.2-2 shared too long", "$share/g/" + strings.Repeat("a", 65535), 0, ErrTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.rule, func(t *testing.T) {
			if err := ValidFilter(tt.filter, tt.maxLevels); !errors.Is(err, tt.want) || (err == nil) != (tt.want == nil) {
				t.Errorf("ValidFilter(%.20q, %d) = %v, want %v", tt.filter, tt.maxLevels, err, tt.want)
			}
		})
	}
}

func TestParseShare(t *testing.T) {
	tests := []struct {
		rule      string
		filter    string
		group     string
		rest      string
		shared    bool
		want      error
		wantCause error // also wrapped, when the filter part is bad
	}{
		{"not shared", "a/b", "", "a/b", false, nil, nil},
		{"not shared: $share alone", "$share", "", "$share", false, nil, nil},
		{"not shared: other $ prefix", "$shared/g/a", "", "$shared/g/a", false, nil, nil},
		{"not shared: case matters", "$SHARE/g/a", "", "$SHARE/g/a", false, nil, nil},
		{"MQTT-4.8.2 shared", "$share/g/a/b", "g", "a/b", true, nil, nil},
		{"MQTT-4.8.2 shared wildcard filter", "$share/consumer1/sport/tennis/+", "consumer1", "sport/tennis/+", true, nil, nil},
		{"MQTT-4.8.2 shared hash", "$share/g/#", "g", "#", true, nil, nil},
		{"MQTT-4.8.2 shared $ filter", "$share/g/$SYS/#", "g", "$SYS/#", true, nil, nil},
		{"MQTT-4.8.2 shared empty first level", "$share/g//a", "g", "/a", true, nil, nil},
		{"MQTT-4.8.2-2 no filter", "$share/g", "", "", true, ErrBadShare, nil},
		{"MQTT-4.8.2-2 empty filter", "$share/g/", "", "", true, ErrBadShare, nil},
		{"MQTT-4.8.2-1 empty ShareName", "$share//a", "", "", true, ErrBadShare, nil},
		{"MQTT-4.8.2-1 nothing at all", "$share/", "", "", true, ErrBadShare, nil},
		{"MQTT-4.8.2-2 plus in ShareName", "$share/g+/a", "", "", true, ErrBadShare, nil},
		{"MQTT-4.8.2-2 plus ShareName", "$share/+/a", "", "", true, ErrBadShare, nil},
		{"MQTT-4.8.2-2 hash ShareName", "$share/#", "", "", true, ErrBadShare, nil},
		{"MQTT-4.8.2-2 hash in ShareName", "$share/g#/a", "", "", true, ErrBadShare, nil},
		{"MQTT-1.5.4-2 null in ShareName", "$share/g\x00/a", "", "", true, ErrBadShare, ErrNullChar},
		{"MQTT-4.7.1-1 bad filter", "$share/g/a/#/b", "", "", true, ErrBadShare, ErrBadWildcard},
		{"MQTT-4.7.1-2 bad filter", "$share/g/a+", "", "", true, ErrBadShare, ErrBadWildcard},
	}
	for _, tt := range tests {
		t.Run(tt.rule, func(t *testing.T) {
			group, rest, shared, err := ParseShare(tt.filter)
			if group != tt.group || rest != tt.rest || shared != tt.shared {
				t.Errorf("ParseShare(%q) = %q, %q, %v, want %q, %q, %v", tt.filter, group, rest, shared, tt.group, tt.rest, tt.shared)
			}
			if !errors.Is(err, tt.want) || (err == nil) != (tt.want == nil) {
				t.Errorf("ParseShare(%q) err = %v, want %v", tt.filter, err, tt.want)
			}
			if tt.wantCause != nil && !errors.Is(err, tt.wantCause) {
				t.Errorf("ParseShare(%q) err = %v, want it to wrap %v", tt.filter, err, tt.wantCause)
			}
			// A filter ParseShare rejects, ValidFilter rejects too.
			if err != nil && ValidFilter(tt.filter, 0) == nil {
				t.Errorf("ValidFilter(%q) = nil, ParseShare says %v", tt.filter, err)
			}
		})
	}
}

func TestValidDoesNotAllocate(t *testing.T) {
	allocs := testing.AllocsPerRun(100, func() {
		_ = ValidName("sport/tennis/player1/ranking", 0)
		_ = ValidFilter("sport/+/player1/#", 0)
		_ = ValidFilter("$share/g/sport/+/player1/#", 0)
	})
	if allocs != 0 {
		t.Errorf("validating valid topics: %v allocs, want 0", allocs)
	}
}
