package broker

import (
	"slices"
	"testing"

	"github.com/roost-mqtt/roost/packet"
)

// TestGroupsOnlyOf: a share group is named when its members here matching
// the topic are all sessions of names, or when it has none here.
func TestGroupsOnlyOf(t *testing.T) {
	t.Parallel()
	s, _ := startServer(t, Options{})
	opts := packet.SubOptions{QoS: 2}
	for id, f := range map[string]string{"r1": "$share/ga/t/#", "r2": "$share/gb/t/#", "l1": "$share/gb/t/#", "r3": "$share/gc/x"} {
		s.Adopt(&StoredSession{ClientID: id, Expiry: 600, Subs: []StoredSub{{Filter: f, Opts: opts}}})
	}
	restored := func(id string) bool { return id == "r1" || id == "r2" || id == "r3" }
	groups := []string{"ga\x00t/#", "gb\x00t/#", "gd\x00t/#"}
	got := s.GroupsOnlyOf("t/1", groups, restored)
	// ga: r1 only; gb: l1 is not one of them; gd: no member here.
	if want := []string{"ga\x00t/#", "gd\x00t/#"}; !slices.Equal(got, want) {
		t.Errorf("GroupsOnlyOf = %q, want %q", got, want)
	}
	if got := s.GroupsOnlyOf("t/1", groups, nil); !slices.Equal(got, []string{"gd\x00t/#"}) {
		t.Errorf("GroupsOnlyOf(nil) = %q, want only gd (no member here)", got)
	}
}
