package topic

import "testing"

// matchTests are shared by the reference Match, the Tree and Retained tests.
var matchTests = []struct {
	filter, name string
	want         bool
}{
	// The specification's examples [MQTT-4.7.1].
	{"sport/tennis/player1/#", "sport/tennis/player1", true},
	{"sport/tennis/player1/#", "sport/tennis/player1/ranking", true},
	{"sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true},
	{"sport/#", "sport", true},
	{"sport/tennis/+", "sport/tennis/player1", true},
	{"sport/tennis/+", "sport/tennis/player2", true},
	{"sport/tennis/+", "sport/tennis/player1/ranking", false},
	{"sport/+", "sport", false},
	{"sport/+", "sport/", true},
	{"+/+", "/finance", true},
	{"/+", "/finance", true},
	{"+", "/finance", false},
	// The examples.
	{"System/+", "System/iOS", true},
	{"System/+", "System/Android", true},
	{"System/+", "System/iOS/123", false},
	{"System/+", "System", false},
	{"System/#", "System", true},
	{"System/#", "System/iOS/123", true},
	{"System/#", "Systems", false},
	{"System/#", "system/iOS", false},
	// '$' names and leading wildcards [MQTT-4.7.2-1].
	{"#", "$SYS/x", false},
	{"+/x", "$SYS/x", false},
	{"+", "$SYS", false},
	{"+/#", "$SYS/x", false},
	{"$SYS/#", "$SYS/broker/uptime", true},
	{"$SYS/+/uptime", "$SYS/broker/uptime", true},
	{"$SYS/broker/uptime", "$SYS/broker/uptime", true},
	{"a/+", "a/$b", true}, // the rule applies to the first level only
	{"a/#", "a/$b", true},
	{"#", "a$", true},
	// Empty levels.
	{"a//b", "a//b", true},
	{"a/+/b", "a//b", true},
	{"a/b", "a//b", false},
	{"a//b", "a/b", false},
	{"/", "/", true},
	{"+/+", "/", true},
	{"+", "/", false},
	{"#", "/", true},
	{"/#", "/", true},
	{"/#", "/a/b", true},
	{"+/#", "/", true},
	{"a/#", "a/", true},
	{"a/+/#", "a/", true},
	{"a/+/+", "a/", false},
	{"/a", "a", false},
	{"a/", "a", false},
	{"a", "a/", false},
	// Plain literals and '#' everywhere.
	{"a", "a", true},
	{"a", "b", false},
	{"#", "a/b/c", true},
	{"a/b/c", "a/b", false},
	{"a/b", "a/b/c", false},
	{"+/+/+", "a/b/c", true},
	{"+/+", "a/b/c", false},
	{"a/#", "ab/c", false},
}

func TestMatch(t *testing.T) {
	for _, tt := range matchTests {
		if got := Match(tt.filter, tt.name); got != tt.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tt.filter, tt.name, got, tt.want)
		}
	}
}

func TestMatchDoesNotAllocate(t *testing.T) {
	allocs := testing.AllocsPerRun(100, func() {
		Match("sport/+/player1/#", "sport/tennis/player1/ranking")
	})
	if allocs != 0 {
		t.Errorf("Match: %v allocs, want 0", allocs)
	}
}
