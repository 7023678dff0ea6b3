package broker

import (
	"fmt"
	"testing"

	"github.com/roost-mqtt/roost/packet"
)

// TestDeliverRemoteAcceptedPastQueueLimit: a message a cluster already
// accepted for a session (RemoteMessage.Accepted: held for a session
// moving here) is queued past MaxQueued; the limit applies to the new
// messages after it, which are dropped and counted as before.
func TestDeliverRemoteAcceptedPastQueueLimit(t *testing.T) {
	t.Parallel()
	s, _ := startServer(t, Options{MaxQueued: 2})
	s.Adopt(&StoredSession{ClientID: "mover", Expiry: 600,
		Subs: []StoredSub{{Filter: "held/#", Opts: packet.SubOptions{QoS: 1}}}})
	only := func(id string) bool { return id == "mover" }
	for i := range 5 {
		n, _ := s.DeliverRemote(&RemoteMessage{Topic: "held/t", Payload: []byte(fmt.Sprint(i)), QoS: 1,
			Pick: only, Accepted: true})
		if n != 1 {
			t.Fatalf("accepted message %d went to %d sessions, want 1", i, n)
		}
	}
	if cs, _, _ := s.Client("mover"); cs.Queued != 5 || cs.Dropped != 0 {
		t.Fatalf("after 5 accepted messages with MaxQueued 2: %d queued, %d dropped; want 5 and 0", cs.Queued, cs.Dropped)
	}
	s.DeliverRemote(&RemoteMessage{Topic: "held/t", Payload: []byte("new"), QoS: 1})
	cs, _, _ := s.Client("mover")
	if cs.Queued != 5 || cs.Dropped != 1 || s.Stats().Dropped[DropQueueFull] != 1 {
		t.Errorf("after a new message: %d queued, %d dropped (%d counted); want 5, 1, 1", cs.Queued, cs.Dropped,
			s.Stats().Dropped[DropQueueFull])
	}
}

// TestUnrouteHandedOver: a session handed over and taken off the tree
// (Unroute) gets no message, plain or for its share group, while it stays
// until done; the cluster is told its subscriptions went.
func TestUnrouteHandedOver(t *testing.T) {
	t.Parallel()
	s, _ := startServer(t, Options{})
	s.Adopt(&StoredSession{ClientID: "mover", Expiry: 600, Subs: []StoredSub{
		{Filter: "a/b", Opts: packet.SubOptions{QoS: 1}}, {Filter: "$share/g/t", Opts: packet.SubOptions{QoS: 1}}}})
	rec, done := s.HandOver("mover", true)
	if rec == nil || done == nil {
		t.Fatal("nothing handed over")
	}
	if n, _ := s.DeliverRemote(&RemoteMessage{Topic: "t", QoS: 1, Groups: []string{"g\x00t"}}); n != 1 {
		t.Fatalf("before Unroute the handed-over session is still a member: %d deliveries, want 1", n)
	}
	s.Unroute("mover")
	if n, _ := s.DeliverRemote(&RemoteMessage{Topic: "t", QoS: 1, Groups: []string{"g\x00t"}}); n != 0 {
		t.Errorf("group message after Unroute went to %d sessions, want 0", n)
	}
	if n, _ := s.DeliverRemote(&RemoteMessage{Topic: "a/b", QoS: 1}); n != 0 {
		t.Errorf("plain message after Unroute went to %d sessions, want 0", n)
	}
	if !s.HasSession("mover") {
		t.Error("Unroute ended the session; it stays until done")
	}
	done(false)
	if s.HasSession("mover") {
		t.Error("done did not end the session")
	}
}

// TestDeliverRemoteGroupsOnly: a message for its groups only
// (RemoteMessage.GroupsOnly: a cluster passing on a group message for a
// member that moved here) reaches the group's member and no plain
// subscription, whatever Pick says; with PickShared, Pick still chooses
// among the members. Without it, the plain subscriber here got a second
// copy of what its own forward brought (issue #17).
func TestDeliverRemoteGroupsOnly(t *testing.T) {
	t.Parallel()
	s, _ := startServer(t, Options{})
	s.Adopt(&StoredSession{ClientID: "plain", Expiry: 600, Subs: []StoredSub{{Filter: "t/#", Opts: packet.SubOptions{QoS: 2}}}})
	s.Adopt(&StoredSession{ClientID: "member", Expiry: 600, Subs: []StoredSub{{Filter: "$share/g/t/#", Opts: packet.SubOptions{QoS: 2}}}})
	queued := func(id string) int {
		cs, _, _ := s.Client(id)
		return cs.Queued
	}
	all := func(string) bool { return true }
	for i, m := range []*RemoteMessage{
		{Topic: "t/x", QoS: 2, Groups: []string{"g\x00t/#"}, GroupsOnly: true},
		{Topic: "t/x", QoS: 2, Groups: []string{"g\x00t/#"}, GroupsOnly: true, Pick: all},
		{Topic: "t/x", QoS: 2, Groups: []string{"g\x00t/#"}, GroupsOnly: true, Pick: all, PickShared: true},
	} {
		if n, _ := s.DeliverRemote(m); n != 1 {
			t.Errorf("message %d went to %d sessions, want 1 (the member)", i, n)
		}
	}
	if p, g := queued("plain"), queued("member"); p != 0 || g != 3 {
		t.Fatalf("plain subscriber has %d, member %d; want 0 and 3", p, g)
	}
	none := func(string) bool { return false }
	if n, _ := s.DeliverRemote(&RemoteMessage{Topic: "t/x", QoS: 2, Groups: []string{"g\x00t/#"}, GroupsOnly: true,
		Pick: none, PickShared: true}); n != 0 {
		t.Errorf("with PickShared, a member Pick leaves out got it: %d deliveries", n)
	}
	if n, _ := s.DeliverRemote(&RemoteMessage{Topic: "t/x", QoS: 2, Groups: []string{"g\x00t/#"}}); n != 2 {
		t.Errorf("a forward not for groups only went to %d sessions, want both", n)
	}
}
