package broker

import (
	"slices"
	"sync"
	"testing"

	"github.com/roost-mqtt/roost/packet"
)

// withheldCluster is a Cluster that withholds the members it names
// (WithheldMembers) and notes the withheld groups of what it forwards.
type withheldCluster struct {
	withheld map[string]bool
	mu       sync.Mutex
	got      [][]string
}

func (*withheldCluster) Subscribed(string, string)   {}
func (*withheldCluster) Unsubscribed(string, string) {}
func (*withheldCluster) Claim(string) error          { return nil }
func (c *withheldCluster) Withheld(id string) bool   { return c.withheld[id] }
func (c *withheldCluster) Forward(m *Message) (int, func() error) {
	c.mu.Lock()
	c.got = append(c.got, slices.Clone(m.WithheldGroups()))
	c.mu.Unlock()
	return 0, nil
}

// TestWithheldMembers: a withheld member (a cluster's restored session not
// settled yet) gets no share group's message, neither forwarded nor
// published here, while its group has another member here; a group with
// no other member here is missed (from another node) or reported withheld
// (published here), and delivered to nobody; a delivery that picks its
// members (PickShared: a held message) reaches it all the same; and a
// withheld member that got a message under its Origin before still counts
// as its group's copy. Plain subscriptions are the cluster's business
// (Pick).
func TestWithheldMembers(t *testing.T) {
	t.Parallel()
	cl := &withheldCluster{withheld: map[string]bool{"old": true}}
	s, _ := startServer(t, Options{Cluster: cl})
	opts := packet.SubOptions{QoS: 1}
	got := Origin{ClientID: "p", PacketID: 7, Nonce: 9}
	s.Adopt(&StoredSession{ClientID: "old", Expiry: 600, Seen: []uint64{got.Hash()}, Subs: []StoredSub{
		{Filter: "$share/both/t", Opts: opts}, {Filter: "$share/alone/u", Opts: opts}}})
	s.Adopt(&StoredSession{ClientID: "live", Expiry: 600, Subs: []StoredSub{{Filter: "$share/both/t", Opts: opts}}})

	for range 10 {
		rm := &RemoteMessage{Topic: "t", QoS: 1, Groups: []string{"both\x00t"}}
		if n, _ := s.DeliverRemote(rm); n != 1 || len(rm.Missed) != 0 {
			t.Fatalf("forwarded to group both: %d deliveries, missed %q; want 1 and none", n, rm.Missed)
		}
		if _, err := s.Publish(PublishRequest{Topic: "t", QoS: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if c, _, _ := s.Client("live"); c.Queued != 20 {
		t.Errorf("the live member got %d of group both's 20 messages", c.Queued)
	}
	again := &RemoteMessage{Topic: "t", QoS: 2, Groups: []string{"both\x00t"}, Origin: got}
	if n, _ := s.DeliverRemote(again); n != 0 {
		t.Errorf("a message withheld member old got before went to %d sessions of its group again", n)
	}

	rm := &RemoteMessage{Topic: "u", QoS: 1, Groups: []string{"alone\x00u"}}
	if n, _ := s.DeliverRemote(rm); n != 0 || !slices.Equal(rm.Missed, []string{"alone\x00u"}) {
		t.Errorf("forwarded to group alone: %d deliveries, missed %q; want 0 and the group", n, rm.Missed)
	}
	cl.mu.Lock()
	cl.got = nil
	cl.mu.Unlock()
	if _, err := s.Publish(PublishRequest{Topic: "u", QoS: 1}); err != nil {
		t.Fatal(err)
	}
	cl.mu.Lock()
	if want := []string{"alone\x00u"}; len(cl.got) != 1 || !slices.Equal(cl.got[0], want) {
		t.Errorf("published to group alone: Forward saw withheld groups %q, want %q", cl.got, want)
	}
	cl.mu.Unlock()
	if c, _, _ := s.Client("old"); c.Queued != 0 {
		t.Errorf("the withheld member got %d messages, want none", c.Queued)
	}

	held := &RemoteMessage{Topic: "u", QoS: 1, Groups: []string{"alone\x00u"}, PickShared: true,
		Pick: func(id string) bool { return id == "old" }}
	if n, _ := s.DeliverRemote(held); n != 1 || len(held.Missed) != 0 {
		t.Errorf("held message for group alone: %d deliveries, missed %q; want 1 (old) and none", n, held.Missed)
	}
	if c, _, _ := s.Client("old"); c.Queued != 1 {
		t.Errorf("the withheld member got %d held messages, want 1", c.Queued)
	}
}
