package cluster

import (
	"context"
	"errors"
	"strconv"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/roost-mqtt/roost/broker"
)

// A QoS 2 resend's group claim (ClaimGroup) found made for the served
// copy of another member here returns that member, which the broker then
// gives the group to; one found made for a member not here, or by a
// reader, returns "" (left out). Before, every claim not the resend's own
// was left out: test/jepsen TestClusterFull short faults, seed 2027,
// pub0#84's g0 claimed on n2 for g0m1's copy there, which moved out live
// to n1 before the routing; n1 routed the group there, picked g0m0, found
// the claim g0m1's and left g0 out, and g0m1 never got it (broker
// TestResendClaimsOther).
func TestClaimGroupServedOther(t *testing.T) {
	t.Parallel() // in-process engines: it waits on their election, beside the process tests
	nd, js := engineJS(t)
	nd.sess = &sessions{n: nd, js: js}
	o := broker.Origin{ClientID: "pub0", PacketID: 4, Nonce: 7}
	p := nd.sess.partition(o.ClientID)
	jsStep(t, "create the stream", func(ctx context.Context) error {
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: streamName(p),
			Subjects: []string{sessPrefix + "." + strconv.Itoa(p) + ".>"}, Storage: jetstream.FileStorage, Replicas: 3})
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return nil // an earlier attempt made it
		}
		return err
	})
	claim := func(gk, member string, others ...string) string {
		var by string
		jsStep(t, "claim", func(context.Context) error {
			var err error
			by, err = nd.ClaimGroup(o, gk, member, others)
			return err
		})
		return by
	}
	// n2's resend, for its g0m1 copy.
	if by := claim("g0\x00t/#", "g0m1"); by != "g0m1" {
		t.Fatalf("the first claim: for %q, want g0m1", by)
	}
	for _, c := range []struct {
		member string
		others []string
		want   string
	}{
		{"g0m1", nil, "g0m1"},                      // its own, made before
		{"g0m0", []string{"g0m1"}, "g0m1"},         // g0m1 moved here: it gets the group
		{"g0m0", []string{"g0m2"}, ""},             // g0m1 is not here
		{"g0m0", nil, ""},                          // the group's only member here
		{"g0m2", []string{"g0m0", "g0m1"}, "g0m1"}, // any of the others
	} {
		if by := claim("g0\x00t/#", c.member, c.others...); by != c.want {
			t.Errorf("claimed for %s with others %q: for %q, want %q", c.member, c.others, by, c.want)
		}
	}
	// A reader's claim (a held copy's, for g1m1) stays its reader's:
	// that reader gives g1m1 the held copy.
	jsStep(t, "a reader's claim", func(ctx context.Context) error {
		_, err := publishClaim(ctx, js, nd.sess.claimMsg(originKey{}, o, "g1\x00t/#", "g1m1"))
		return err
	})
	if by := claim("g1\x00t/#", "g1m0", "g1m1"); by != "" {
		t.Errorf("a reader's claim for g1m1, g1m1 here: for %q, want \"\" (its reader delivers)", by)
	}
}
