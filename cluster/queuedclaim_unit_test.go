package cluster

import (
	"testing"

	"github.com/roost-mqtt/roost/broker"
)

// TestQueuedGroup: a queued delivery is claimed for the one share group
// of its session whose filter matches its topic, and for none when two
// do (which one it came through is not known).
func TestQueuedGroup(t *testing.T) {
	groups := map[string]string{
		"$share/g0/t/#": "g0\x00t/#",
		"$share/g1/u/+": "g1\x00u/+",
		"$share/g2/u/1": "g2\x00u/1",
	}
	for _, tc := range []struct{ topic, want string }{
		{"t/1", "g0\x00t/#"},
		{"t", "g0\x00t/#"}, // '#' matches the parent level too
		{"u/2", "g1\x00u/+"},
		{"u/1", ""}, // g1 and g2
		{"v/1", ""},
	} {
		if got := queuedGroup(groups, tc.topic); got != tc.want {
			t.Errorf("queuedGroup(%q) = %q, want %q", tc.topic, got, tc.want)
		}
	}
}

// TestServedClaimNamesNoReader: the claim a first routing, a resend or an
// adoption makes for a member is never taken by a reader for one made for
// its own session (ownClaim compares the claim's data with the member).
func TestServedClaimNamesNoReader(t *testing.T) {
	for _, id := range []string{"", "g0m0", "a/b"} {
		if servedClaim(id) == id {
			t.Errorf("servedClaim(%q) equals the member's name", id)
		}
	}
	if servedClaim("a") == servedClaim("b") {
		t.Error("two members' claims are the same")
	}
}

// TestGateRestored: of a session restored from the node's own store,
// each queued QoS 2 copy through one share subscription under an Origin
// is claimed at the settle (TestReproGroupRestoredUnclaimed), and the one
// not sent yet waits for that claim in its queue (Claim set); a QoS 1
// copy (a repeat is allowed, a loss is not), a plain subscription's, a
// released one and one without an Origin are left as they are.
func TestGateRestored(t *testing.T) {
	msg := func(topic string, o broker.Origin) *broker.Message {
		m := &broker.Message{Topic: topic, QoS: 2}
		m.SetOrigin(o)
		return m
	}
	pub := broker.Origin{ClientID: "pub", PacketID: 1, Nonce: 7}
	rec := &broker.StoredSession{ClientID: "a",
		Subs: []broker.StoredSub{{Filter: "$share/g/t/+"}, {Filter: "p/#"}},
		Queue: []broker.StoredDelivery{
			{Msg: msg("t/1", pub), QoS: 2, PacketID: 4},                 // sent: claimed, cannot wait
			{Msg: msg("t/1", pub), QoS: 2},                              // held for its claim
			{Msg: msg("t/2", broker.Origin{Nonce: 9}), QoS: 2},          // a copy's name: held too
			{Msg: msg("t/1", pub), QoS: 1},                              // QoS 1 copy
			{Msg: msg("p/1", pub), QoS: 2},                              // plain subscription
			{Msg: msg("t/1", pub), QoS: 2, PacketID: 5, Released: true}, // released
			{Msg: msg("t/1", broker.Origin{}), QoS: 2},                  // no Origin
		}}
	got := gateRestored(rec)
	if len(got) != 3 {
		t.Fatalf("gateRestored: %d copies to claim, want 3 (queue entries 0-2)", len(got))
	}
	for i, d := range rec.Queue {
		if gated := d.Claim != nil; gated != (i == 1 || i == 2) {
			t.Errorf("queue entry %d: held for a claim %v", i, gated)
		}
	}
	for i, c := range got {
		if c.id != "a" || c.gk != "g\x00t/+" || (c.gate != nil) != (i > 0) || c.msg != rec.Queue[i].Msg {
			t.Errorf("copy %d: %+v", i, c)
		}
	}
}
