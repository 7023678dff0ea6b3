package broker

import (
	"slices"
	"sync"
	"testing"

	"github.com/roost-mqtt/roost/packet"
)

// passCluster is a claimCluster that serves the share groups of pass
// elsewhere (GroupPasser) and records what Forward was told of them.
type passCluster struct {
	claimCluster
	pass   []string
	pmu    sync.Mutex
	asked  int
	passed [][]string
}

func (c *passCluster) PassGroups(string) []string {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	c.asked++
	return slices.Clone(c.pass)
}

func (c *passCluster) Forward(m *Message) (int, func() error) {
	c.pmu.Lock()
	c.passed = append(c.passed, slices.Clone(m.PassedGroups()))
	c.pmu.Unlock()
	return c.claimCluster.Forward(m)
}

func (c *passCluster) ForwardOrigin(m *Message, _ Origin) (int, func() error) { return c.Forward(m) }

// TestPassedGroups: a share group of a QoS 1/2 message published here
// that the cluster serves on another node (GroupPasser: its only member
// here is a restored copy not known to be its session's own) goes to no
// member here, and Forward is told (PassedGroups), a resend's included,
// whose claim is then made where the group is served; another group's
// away copy takes its message as before. A forwarded message names the
// groups this node serves, and the passed group's member gets it; QoS 0
// asks nothing (test/jepsen TestClusterFull short faults, seed 838: the
// group's only copy kept for a restored copy whose session's owner never
// read it).
func TestPassedGroups(t *testing.T) {
	t.Parallel()
	cl := &passCluster{claimCluster: claimCluster{awayCluster: awayCluster{away: map[string]bool{"restored": true, "copy": true}},
		taken: map[string]bool{}, fail: map[string]bool{}}, pass: []string{"passed\x00t"}}
	s, _ := startServer(t, Options{Cluster: cl})
	opts := packet.SubOptions{QoS: 2}
	for id, f := range map[string]string{"restored": "$share/passed/t", "copy": "$share/alone/t"} {
		s.Adopt(&StoredSession{ClientID: id, Expiry: 600, Subs: []StoredSub{{Filter: f, Opts: opts}}})
	}
	queued := func(id string) int {
		c, _, _ := s.Client(id)
		return c.Queued
	}

	if _, err := s.Publish(PublishRequest{Topic: "t", QoS: 1}); err != nil {
		t.Fatal(err)
	}
	if queued("restored") != 0 || queued("copy") != 1 {
		t.Errorf("published here: restored got %d, copy %d; want 0 (passed) and 1 (its away copy's, kept)", queued("restored"), queued("copy"))
	}
	cl.pmu.Lock()
	if len(cl.passed) != 1 || !slices.Equal(cl.passed[0], cl.pass) {
		t.Errorf("Forward saw passed groups %q, want [%q]", cl.passed, cl.pass)
	}
	cl.pmu.Unlock()
	cl.mu.Lock()
	if want := []AwayMember{{ClientID: "copy", Group: "alone\x00t"}}; len(cl.got) != 1 || !slices.Equal(cl.got[0], want) {
		t.Errorf("Forward saw away members %v, want %v", cl.got, want)
	}
	cl.mu.Unlock()

	msg := &Message{ID: s.msgID.Add(1), Topic: "t", QoS: 2}
	msg.markResent()
	if _, _, _, confirm := s.routeOrigin(msg, Origin{ClientID: "pub", PacketID: 5, Nonce: 9}); wait(confirm) != nil {
		t.Fatal("a resend published here not confirmed")
	}
	if want := []string{"alone\x00t"}; !slices.Equal(cl.claimed(), want) {
		t.Errorf("a resend published here claimed %q, want %q (the passed group is claimed where it is served)", cl.claimed(), want)
	}
	if queued("restored") != 0 || queued("copy") != 2 {
		t.Errorf("after a resend: restored got %d, copy %d; want 0 and 2", queued("restored"), queued("copy"))
	}

	if n, _ := s.DeliverRemote(&RemoteMessage{Topic: "t", QoS: 1, Groups: []string{"passed\x00t"}}); n != 1 || queued("restored") != 1 {
		t.Errorf("forwarded for the passed group: %d deliveries, restored has %d; want 1 and 1", n, queued("restored"))
	}
	cl.pmu.Lock()
	asked := cl.asked
	cl.pmu.Unlock()
	if _, err := s.Publish(PublishRequest{Topic: "t", QoS: 0}); err != nil {
		t.Fatal(err)
	}
	cl.pmu.Lock()
	defer cl.pmu.Unlock()
	if cl.asked != asked {
		t.Errorf("a QoS 0 publish asked PassGroups")
	}
}
