package bridge

import (
	"errors"
	"testing"
)

// The topic lines and remappings of mosquitto.conf(5): which are refused,
// what each side subscribes to, and where a message goes.
func TestRuleValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    Rule
		ok   bool
	}{
		{"pattern only", Rule{Pattern: "a/#", Direction: Out}, true},
		{"prefixes", Rule{Pattern: "#", Direction: Both, QoS: 2, LocalPrefix: "l/", RemotePrefix: "r/"}, true},
		{"one prefix", Rule{Pattern: "x/+", Direction: In, RemotePrefix: "r/"}, true},
		{"single topic remap", Rule{Direction: Out, LocalPrefix: "a/b", RemotePrefix: "c/d"}, true},
		{"empty pattern, one prefix", Rule{Direction: Out, LocalPrefix: "a/b"}, false},
		{"empty pattern, no prefix", Rule{Direction: Out}, false},
		{"wildcard in prefix", Rule{Pattern: "#", Direction: Out, LocalPrefix: "a/+/"}, false},
		{"prefix+pattern not a filter", Rule{Pattern: "a#", Direction: Out, LocalPrefix: "l/"}, false},
		{"bad pattern", Rule{Pattern: "a/#/b", Direction: Out}, false},
		{"QoS 3", Rule{Pattern: "a", Direction: Out, QoS: 3}, false},
		{"no direction", Rule{Pattern: "a"}, false},
	} {
		err := tc.r.Validate()
		if (err == nil) != tc.ok {
			t.Errorf("%s: Validate() = %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrBadRule) {
			t.Errorf("%s: %v does not wrap ErrBadRule", tc.name, err)
		}
	}
}

func TestRuleMapping(t *testing.T) {
	rules := []Rule{
		{Pattern: "cmd/#", Direction: In, LocalPrefix: "edge/", RemotePrefix: "cloud/site1/"},
		{Pattern: "sensors/#", Direction: Out, LocalPrefix: "edge/", RemotePrefix: "cloud/site1/"},
		{Pattern: "plain/#", Direction: Both},
		{Direction: Out, LocalPrefix: "one/topic", RemotePrefix: "other/name"},
		{Pattern: "#", Direction: Both, LocalPrefix: "mirror/", RemotePrefix: ""},
	}
	for _, tc := range []struct{ in, want string }{
		{"edge/sensors/t1", "cloud/site1/sensors/t1"},
		{"plain/x", "plain/x"}, // a rule without prefixes remaps nothing; mirror/# does not match
		{"one/topic", "other/name"},
		{"mirror/a/b", "a/b"},
		{"edge/cmd/go", "edge/cmd/go"}, // cmd/# is In only, and mirror/# does not match
	} {
		if got := mapOut(rules, tc.in); got != tc.want {
			t.Errorf("mapOut(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"cloud/site1/cmd/go", "edge/cmd/go"},
		{"cloud/site1/sensors/t1", "mirror/cloud/site1/sensors/t1"}, // sensors is Out only: the "#" rule adds mirror/
		{"a/b", "mirror/a/b"},
	} {
		if got := mapIn(rules, tc.in); got != tc.want {
			t.Errorf("mapIn(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParseTopicLine(t *testing.T) {
	for _, tc := range []struct {
		line string
		want Rule
		bad  bool
	}{
		{line: "#", want: Rule{Pattern: "#", Direction: Out}},
		{line: "a/# in", want: Rule{Pattern: "a/#", Direction: In}},
		{line: "a/# both 2", want: Rule{Pattern: "a/#", Direction: Both, QoS: 2}},
		{line: "# out 1 local/ remote/", want: Rule{Pattern: "#", Direction: Out, QoS: 1, LocalPrefix: "local/", RemotePrefix: "remote/"}},
		{line: `"" in 0 here/t there/t`, want: Rule{Direction: In, LocalPrefix: "here/t", RemotePrefix: "there/t"}},
		{line: `# both 0 "" remote/`, want: Rule{Pattern: "#", Direction: Both, RemotePrefix: "remote/"}},
		{line: "# sideways", bad: true},
		{line: "# out 3", bad: true},
		{line: "# out x", bad: true},
		{line: `"" out 0 only/local`, bad: true},
		{line: "# out 0 a/ b/ extra", bad: true},
		{line: "", bad: true},
	} {
		got, err := ParseTopicLine(tc.line)
		if tc.bad {
			if err == nil {
				t.Errorf("%q: accepted as %+v", tc.line, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: got %+v, %v; want %+v", tc.line, got, err, tc.want)
		}
		if back, err := ParseTopicLine(got.String()); err != nil || back != got {
			t.Errorf("%q: String() %q does not read back: %+v, %v", tc.line, got.String(), back, err)
		}
	}
}
