package broker

import (
	"fmt"
	"slices"
	"testing"

	"github.com/roost-mqtt/roost/packet"
)

// TestRemoteMembers: a share group named in RemoteMessage.Members goes to
// the member named there, whatever the turn says, and to nobody here when
// that member is not one here (Missed): a held message's claim named it,
// and its next reader elsewhere takes the claim over. A group not named
// is picked as before.
func TestRemoteMembers(t *testing.T) {
	t.Parallel()
	s, _ := startServer(t, Options{Cluster: &awayCluster{away: map[string]bool{}}})
	opts := packet.SubOptions{QoS: 2}
	for id, f := range map[string]string{"a1": "$share/ga/t", "a2": "$share/ga/t", "b1": "$share/gb/t", "b2": "$share/gb/t", "c1": "$share/gc/t"} {
		s.Adopt(&StoredSession{ClientID: id, Expiry: 600, Subs: []StoredSub{{Filter: f, Opts: opts}}})
	}
	groups := []string{"ga\x00t", "gb\x00t", "gc\x00t"}
	for i := range 4 {
		// Named a2 every time: a turn by message would give a1 half.
		rm := &RemoteMessage{Topic: "t", QoS: 2, Payload: []byte(fmt.Sprint(i)), Groups: groups,
			Members: map[string]string{"ga\x00t": "a2", "gb\x00t": "gone"}}
		if n, _ := s.DeliverRemote(rm); n != 2 {
			t.Errorf("message %d went to %d sessions, want 2 (a2, c1)", i, n)
		}
		if want := []string{"gb\x00t"}; !slices.Equal(rm.Missed, want) {
			t.Errorf("message %d: missed %q, want %q (gb's named member is not here)", i, rm.Missed, want)
		}
	}
	for id, want := range map[string]int{"a1": 0, "a2": 4, "b1": 0, "b2": 0, "c1": 4} {
		if c, _, _ := s.Client(id); c.Queued != want {
			t.Errorf("%s got %d copies, want %d", id, c.Queued, want)
		}
	}
}
