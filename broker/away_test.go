package broker

import (
	"slices"
	"sync"
	"testing"

	"github.com/roost-mqtt/roost/packet"
)

// awayCluster is a Cluster with away copies (AwayCopies) that records
// what Forward was told of them.
type awayCluster struct {
	away map[string]bool
	mu   sync.Mutex
	got  [][]AwayMember
}

func (*awayCluster) Subscribed(string, string)   {}
func (*awayCluster) Unsubscribed(string, string) {}
func (*awayCluster) Claim(string) error          { return nil }
func (c *awayCluster) Away(id string) bool       { return c.away[id] }
func (c *awayCluster) Forward(m *Message) (int, func() error) {
	c.mu.Lock()
	c.got = append(c.got, slices.Clone(m.AwayMembers()))
	c.mu.Unlock()
	return 0, nil
}

// TestAwayCopyMember: a share group's message goes to an away copy only
// when the group has no other member here, and the broker says so for
// a message published here (Message.AwayMembers, in Forward) and one
// from another node (RemoteMessage.Away).
func TestAwayCopyMember(t *testing.T) {
	t.Parallel()
	cl := &awayCluster{away: map[string]bool{"copy": true}}
	s, _ := startServer(t, Options{Cluster: cl})
	opts := packet.SubOptions{QoS: 1}
	s.Adopt(&StoredSession{ClientID: "copy", Expiry: 600, Subs: []StoredSub{
		{Filter: "$share/both/t", Opts: opts}, {Filter: "$share/alone/u", Opts: opts}}})
	s.Adopt(&StoredSession{ClientID: "live", Expiry: 600, Subs: []StoredSub{{Filter: "$share/both/t", Opts: opts}}})

	for range 10 {
		rm := &RemoteMessage{Topic: "t", QoS: 1, Groups: []string{"both\x00t"}}
		if n, _ := s.DeliverRemote(rm); n != 1 || len(rm.Away) != 0 {
			t.Fatalf("forwarded to group both: %d deliveries, away %v; want 1 and none", n, rm.Away)
		}
		if _, err := s.Publish(PublishRequest{Topic: "t", QoS: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if c, _, _ := s.Client("copy"); c.Queued != 0 {
		t.Errorf("the away copy got %d of group both's messages, which has a live member here", c.Queued)
	}
	if c, _, _ := s.Client("live"); c.Queued != 20 {
		t.Errorf("the live member got %d of group both's 20 messages", c.Queued)
	}

	rm := &RemoteMessage{Topic: "u", QoS: 1, Groups: []string{"alone\x00u"}}
	want := []AwayMember{{ClientID: "copy", Group: "alone\x00u"}}
	if n, _ := s.DeliverRemote(rm); n != 1 || !slices.Equal(rm.Away, want) {
		t.Errorf("forwarded to group alone: %d deliveries, away %v; want 1 and %v", n, rm.Away, want)
	}
	cl.mu.Lock()
	cl.got = nil
	cl.mu.Unlock()
	if _, err := s.Publish(PublishRequest{Topic: "u", QoS: 1}); err != nil {
		t.Fatal(err)
	}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if len(cl.got) != 1 || !slices.Equal(cl.got[0], want) {
		t.Errorf("published to group alone: Forward saw away members %v, want %v", cl.got, want)
	}
	if c, _, _ := s.Client("copy"); c.Queued != 2 {
		t.Errorf("the away copy, group alone's only member, got %d of its 2 messages", c.Queued)
	}
}

// endingStore is a Store that, at the OpSessionDel of id, calls atDel
// (with the server's locks that endSessionLocked holds).
type endingStore struct {
	idLog
	id    string
	atDel func()
}

func (e *endingStore) Append(ops ...Op) Ticket {
	for _, op := range ops {
		if op.Kind == OpSessionDel && op.ClientID == e.id && e.atDel != nil {
			e.atDel()
		}
	}
	return e.idLog.Append(ops...)
}

// lockedAway is an AwayCopies whose answer changes while messages are
// routed.
type lockedAway struct {
	awayCluster
	amu  sync.Mutex
	gone bool // the copy is no longer away: its OpSessionDel came
}

func (c *lockedAway) Away(id string) bool {
	c.amu.Lock()
	defer c.amu.Unlock()
	return id == "copy" && !c.gone
}

// TestAwayCopyEnd: an away copy stops being away at its OpSessionDel (a
// cluster keeps what the copy takes until then), so it must be off the
// subscription tree by then, and a match must ask Away when it finds the
// copy: a message matched in between, through a plain subscription or as
// a group's only member, went to the copy with nobody told, and ended
// with it (bench/jepsen/RESULTS.md, "The copy's end and share groups").
// Every message the copy takes must be reported (AwayMembers,
// RemoteMessage.Away).
func TestAwayCopyEnd(t *testing.T) {
	t.Parallel()
	cl := &lockedAway{}
	st := &endingStore{id: "copy"}
	s, _ := startServer(t, Options{Cluster: cl, Store: st})
	opts := packet.SubOptions{QoS: 1}
	s.Adopt(&StoredSession{ClientID: "copy", Expiry: 600, Subs: []StoredSub{
		{Filter: "p/t", Opts: opts}, {Filter: "$share/alone/g/t", Opts: opts}}})

	// A message routed now reaches the copy and is reported.
	check := func(when string, wantAway bool) {
		t.Helper()
		for _, m := range []struct {
			topic string
			group string
			want  AwayMember
		}{{"p/t", "", AwayMember{ClientID: "copy"}}, {"g/t", "alone\x00g/t", AwayMember{ClientID: "copy", Group: "alone\x00g/t"}}} {
			msg := &Message{ID: 1, Topic: m.topic, QoS: 1}
			var groups []string
			if m.group != "" {
				groups = []string{m.group}
			}
			sc := s.router.matchOnce(msg, append([]string{}, groups...), nil, matchMode{}, nil)
			reached := slices.ContainsFunc(sc.targets, func(tg target) bool { return tg.sess.id == "copy" })
			told := slices.Contains(sc.away, m.want)
			s.router.release(sc)
			if reached && !told {
				t.Errorf("%s: a message to %s reached the copy, and nobody was told it is away", when, m.topic)
			}
			if wantAway && !told {
				t.Errorf("%s: a message to %s: copy reached %v, away reported %v; want both", when, m.topic, reached, told)
			}
		}
	}
	check("before its end", true)
	var ran bool
	st.atDel = func() {
		// The cluster's Append: the copy is no longer kept from here.
		cl.amu.Lock()
		cl.gone = true
		cl.amu.Unlock()
		ran = true
		check("at its OpSessionDel", false)
	}
	if !s.EndSession("copy", false) {
		t.Fatal("the copy did not end")
	}
	if !ran {
		t.Fatal("the copy ended without an OpSessionDel")
	}
}
