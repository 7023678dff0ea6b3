package cluster

import (
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/roost-mqtt/roost/topic"
)

func TestTopicSubject(t *testing.T) {
	tests := []struct{ topic, subject string }{
		{"a/b/c", "p.a.b.c"},
		{"a.b", "p.a%2Eb"},
		{"*", "p.%2A"},
		{">", "p.%3E"},
		{"a b/c\td", "p.a%20b.c%09d"},
		{"/", "p.%.%"},
		{"a//b/", "p.a.%.b.%"},
		{"100%", "p.100%25"},
		{"$SYS/x", "p.$SYS.x"},
		{"émoji/😀", "p.émoji.😀"},
		{"del\x7f", "p.del%7F"},
	}
	for _, tt := range tests {
		got := TopicSubject("p", tt.topic)
		if got != tt.subject {
			t.Errorf("TopicSubject(%q) = %q, want %q", tt.topic, got, tt.subject)
		}
		back, err := SubjectTopic(got, 1)
		if err != nil || back != tt.topic {
			t.Errorf("SubjectTopic(%q) = %q, %v; want %q", got, back, err, tt.topic)
		}
	}
}

func TestSubjectTopicRejects(t *testing.T) {
	for _, s := range []string{"p", "p.a..b", "p.%4", "p.%zz", "p.%41" /* 'A' needs no escape */, "p.a b"} {
		if got, err := SubjectTopic(s, 1); err == nil {
			t.Errorf("SubjectTopic(%q) = %q, want an error", s, got)
		}
	}
}

func TestFilterSubjects(t *testing.T) {
	tests := []struct {
		filter string
		want   []string
	}{
		{"a/+/c", []string{"p.a.*.c"}},
		{"#", []string{"p.>"}},
		{"a/#", []string{"p.a", "p.a.>"}},
		{"+/#", []string{"p.*", "p.*.>"}},
		{"a.b/+", []string{"p.a%2Eb.*"}},
		{"/#", []string{"p.%", "p.%.>"}},
	}
	for _, tt := range tests {
		if got := FilterSubjects("p", tt.filter); !slices.Equal(got, tt.want) {
			t.Errorf("FilterSubjects(%q) = %q, want %q", tt.filter, got, tt.want)
		}
	}
}

// FuzzSubject checks the mapping against the MQTT topic rules: every valid
// topic maps to a valid literal NATS subject with one token per level and
// back to itself, and a valid filter's subjects match exactly the topics
// the filter matches, but for the one documented difference ('$' topics
// and leading wildcards). Run with: go test -fuzz FuzzSubject ./cluster
func FuzzSubject(f *testing.F) {
	for _, s := range []string{"a/b", "a.b/*/>", " / ", "", "/", "a//b", "%41", "$SYS/a", "+/#", "#", "a/+", "a/#"} {
		f.Add(s, s)
	}
	f.Add("a/#", "a")
	f.Add("+/b", "$x/b")
	f.Add("a.b/+", "a.b/c")
	f.Fuzz(func(t *testing.T, name, filter string) {
		if topic.ValidName(name, 0) == nil {
			subj := TopicSubject("roost.r", name)
			if !server.IsValidLiteralSubject(subj) || !server.IsValidSubject(subj) {
				t.Fatalf("topic %q: subject %q is not a valid literal NATS subject", name, subj)
			}
			if got, want := strings.Count(subj, "."), 2+strings.Count(name, "/"); got != want {
				t.Fatalf("topic %q: subject %q has %d separators, want %d", name, subj, got, want)
			}
			back, err := SubjectTopic(subj, 2)
			if err != nil || back != name {
				t.Fatalf("topic %q: subject %q decodes to %q, %v", name, subj, back, err)
			}
		}
		if topic.ValidFilter(filter, 0) != nil || topic.ValidName(name, 0) != nil {
			return
		}
		if _, _, shared, _ := topic.ParseShare(filter); shared {
			return
		}
		subj := TopicSubject("roost.r", name)
		nats := false
		for _, fs := range FilterSubjects("roost.r", filter) {
			if !server.IsValidSubject(fs) {
				t.Fatalf("filter %q: subject %q is not a valid NATS subject", filter, fs)
			}
			nats = nats || server.SubjectMatchesFilter(subj, fs)
		}
		mqtt := topic.Match(filter, name)
		dollarGap := strings.HasPrefix(name, "$") && (filter[0] == '+' || filter[0] == '#')
		if mqtt != nats && !(nats && dollarGap) {
			t.Fatalf("filter %q topic %q: MQTT match %v, NATS match %v (subject %q, filter subjects %q)",
				filter, name, mqtt, nats, subj, FilterSubjects("roost.r", filter))
		}
	})
}
