package cluster

import (
	"context"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/topic"
)

// servedClaim is the data of a share group claim made for member's copy
// of a message it already holds: by a first routing (claimServed) or by
// the adoption of the member's queued copy (claimQueued). An MQTT client
// id never holds U+0000 [MQTT-1.5.4-2], so no reader takes such a claim
// for one made for its own member (ownClaim) and delivers its held copy
// too.
func servedClaim(member string) string { return "\x00" + member }

// claimQueued claims, before rec (id's session, handed over live or read
// from the stream) is adopted here, the share group of each QoS 2
// delivery in its queue that came through a share subscription under a
// publisher's Origin or a copy's name (copyClaimMsg) and was not
// released, for id (servedClaim). A
// delivery whose group was claimed before for another member, or by a
// resend's routing (ClaimGroup), is taken out of rec: the group's copy is
// that claim's. One that was sent is kept as released (releaseDropped).
//
// Why: a first routing's claim is made only once the member's copy is
// durable on the routing node (claimServed), and not at all when it is
// not within forward_timeout, while the copy stays queued in the session
// and goes with it: a live move hands it over from memory, and its op may
// still reach the stream. The publisher, unanswered, sends the message
// again elsewhere, and that resend's claim found the group unclaimed and
// gave it to another member (test/jepsen TestClusterFull short faults,
// seeds 138, 139, 144: pub0#48 queued for g1m1 on n3, whose partition
// streams had no quorum; n3 skipped the claim at 43.559, g1m1 moved live
// to n1 and n2 and got it, the resend on n2 gave g1 to g1m0;
// TestReproGroupUnclaimedMoved, TestReproGroupUnclaimedResentFirst).
// Claimed here first, the resend finds the group claimed; claimed by the
// resend first, the copy is dropped before anyone sends it.
//
// A delivery whose message matches more than one share subscription of
// the session is left as it is (which group it came through is not
// known), and so is one whose claim fails (the streams without a
// quorum): delivered, as before, at worst a second copy of the group.
// On a restarted node, which takes live moves once its ownership records
// are read, the session streams may open later: the claims wait for
// them, within the same bound. Before, they were skipped without a word
// and the publisher's resend elsewhere gave the group to another member
// (test/jepsen TestClusterFull seed 268: g1m0 moved live to n3 63 ms
// before its streams opened; TestReproGroupQueuedStreamsLate).
// It returns how many deliveries it dropped.
func (n *Node) claimQueued(ctx context.Context, rec *broker.StoredSession) int {
	if n.sess == nil || rec == nil || len(rec.Queue) == 0 {
		return 0
	}
	var groups map[string]string // "$share/g/f" to "g\x00f"
	for _, sub := range rec.Subs {
		if group, plain, shared, err := topic.ParseShare(sub.Filter); err == nil && shared {
			if groups == nil {
				groups = make(map[string]string)
			}
			groups[sub.Filter] = group + "\x00" + plain
		}
	}
	if groups == nil {
		return 0
	}
	s := n.sess
	// One bound for the wait for the streams and the claims: a live move
	// (and the client's CONNACK, the previous owner's wait for the seal)
	// waits no longer than it did for claims to a stream electing a
	// leader.
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ForwardTimeout)
	defer cancel()
	js, err := s.awaitOpenJS(ctx)
	if err != nil {
		n.log.Info("cluster: queued share group copies not claimed at the adoption: the session streams are not open here; kept",
			"client_id", rec.ClientID, "err", err)
		return 0
	}
	type claim struct {
		i int
		m *nats.Msg
		f jetstream.PubAckFuture
	}
	var claims []claim
	for i, d := range rec.Queue {
		if d.Msg == nil || d.QoS != 2 || d.Released {
			continue
		}
		o := d.Msg.Origin()
		if o.IsZero() {
			continue
		}
		gk := queuedGroup(groups, d.Msg.Topic)
		if gk == "" {
			continue
		}
		var m *nats.Msg
		if o.ClientID == "" { // a copy's name (a clean publisher's message): copyOrigin
			m = s.copyClaimMsg(o.Nonce, gk, servedClaim(rec.ClientID))
		} else {
			m = s.claimMsg(originKey{}, o, gk, servedClaim(rec.ClientID))
		}
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			n.log.Info("cluster: a queued share group copy not claimed at its adoption; kept", "client_id", rec.ClientID, "err", err)
			continue
		}
		claims = append(claims, claim{i, m, f})
	}
	drop := make(map[int]bool)
	for _, c := range claims {
		ack, err := awaitClaim(ctx, js, c.m, c.f)
		if err == nil && ack.Duplicate {
			var by string
			if by, err = claimData(ctx, js, ack); err == nil && by != servedClaim(rec.ClientID) && by != rec.ClientID {
				drop[c.i] = true
				d := rec.Queue[c.i]
				o := d.Msg.Origin()
				n.log.Info("cluster: a queued share group copy dropped at its adoption: the group was claimed for another member",
					"client_id", rec.ClientID, "publisher", o.ClientID, "packet_id", o.PacketID, "topic", d.Msg.Topic,
					"sent_packet_id", d.PacketID)
			}
		}
		if err != nil {
			n.log.Info("cluster: a queued share group copy not claimed at its adoption; kept", "client_id", rec.ClientID, "err", err)
		}
	}
	if len(claims) > 0 {
		// One line per adoption with such copies: where a later trace
		// looks for who claimed a group first.
		n.log.Debug("cluster: queued share group copies claimed at the adoption", "client_id", rec.ClientID,
			"claims", len(claims), "dropped", len(drop))
	}
	if len(drop) == 0 {
		return 0
	}
	kept := rec.Queue[:0:0]
	for i, d := range rec.Queue {
		switch {
		case !drop[i]:
			kept = append(kept, d)
		case d.PacketID != 0:
			kept = append(kept, releaseDropped(d))
		}
	}
	rec.Queue = kept
	return len(drop)
}

// releaseDropped is d, a dropped delivery that was sent (it has a packet
// id), as one whose PUBREC came: the client may hold its packet id as
// received, awaiting PUBREL, and takes a later PUBLISH with that id for
// this one sent again, acknowledged and not delivered [MQTT-4.3.3-10].
// Taken out of the queue, the id was free here: the adoption numbered
// the ids on from the highest left, and the session's next QoS 2 message
// got the dropped one's and was lost (test/jepsen TestClusterFull short
// faults, seed 407: pub0#242 sent to g0m1 on n3 as packet 10 and
// acknowledged with PUBREC 30 ms before n3's kill; g0m1's adoption on n2
// dropped it, the group claimed for g0m0 by the resend, and gave
// pub2#246 packet 10: PUBREC, no delivery; TestReproDroppedCopyPacketID).
// Released, the adoption sends PUBREL for it [MQTT-4.4.0-1], which ends
// the client's state for the id whether or not the PUBLISH reached it,
// and the id stays taken until PUBCOMP; the message is not sent again. A
// client that delivers onward at PUBREL instead (MQTT 3.1.1's method A)
// delivers its stored copy then: at worst the group's second copy, which
// the drop could not prevent once the PUBLISH had left, never a loss.
func releaseDropped(d broker.StoredDelivery) broker.StoredDelivery {
	d.Released = true
	return d
}

// queuedGroup returns the one share group ("group\x00filter") of groups
// (by "$share/group/filter") whose filter matches name; "" for none or
// several.
func queuedGroup(groups map[string]string, name string) string {
	var found string
	for _, gk := range groups {
		_, filter, _ := strings.Cut(gk, "\x00")
		if !topic.Match(filter, name) {
			continue
		}
		if found != "" {
			return ""
		}
		found = gk
	}
	return found
}

// awaitClaim waits for the asynchronous append f of claim m, and appends
// it again (publishClaim) when JetStream answered that an append of its
// message id was in process.
func awaitClaim(ctx context.Context, js jetstream.JetStream, m *nats.Msg, f jetstream.PubAckFuture) (*jetstream.PubAck, error) {
	select {
	case ack := <-f.Ok():
		return ack, nil
	case err := <-f.Err():
		if holdAgain(err) { // no answer, or the same claim in process
			return publishClaim(ctx, js, m)
		}
		return nil, err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// claimData reads the claim that dup, an append answered as a duplicate,
// found made.
func claimData(ctx context.Context, js jetstream.JetStream, dup *jetstream.PubAck) (string, error) {
	st, err := js.Stream(ctx, dup.Stream)
	if err != nil {
		return "", err
	}
	m, err := st.GetMsg(ctx, dup.Sequence)
	if err != nil {
		return "", err
	}
	return string(m.Data), nil
}
