package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

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
// known). On a restarted node, which takes live moves once its ownership
// records are read, the session streams may open later: the claims wait
// for them. Before, they were skipped without a word and the publisher's
// resend elsewhere gave the group to another member (test/jepsen
// TestClusterFull seed 268: g1m0 moved live to n3 63 ms before its
// streams opened; TestReproGroupQueuedStreamsLate).
//
// A claim not answered within forward_timeout (the adoption's bound: a
// live move, and the client's CONNACK, wait for it) goes on after the
// adoption, within claimSettleBound, and its delivery, if not sent yet,
// waits in the queue for the answer (broker.QueuedClaim, as a first
// routing's copy waits for ClaimServed): sent once the claim is in,
// dropped if the group was claimed for another member first. Before, a
// claim that failed (a partition stream without a leader: "no response
// from stream") kept the copy unclaimed, the session's client got it, and
// the publisher's resend elsewhere claimed the group for the other member
// once the stream had a leader again (test/jepsen TestClusterFull short
// faults, seed 440: n1 restarted, adopted g0m1 from the stream and failed
// its claim at 48.357; n2's resend claimed g0 for g0m0 at 55.515; seed
// 447 the same on n3; TestReproGroupQueuedLeaderless). The resend's claim
// goes to the same stream, so it cannot land while this one cannot: the
// first in decides, once either way. A delivery sent before (a packet id)
// cannot wait; its claim goes on all the same.
//
// It returns how many deliveries it dropped.
func (n *Node) claimQueued(ctx context.Context, rec *broker.StoredSession) int {
	if n.sess == nil || rec == nil {
		return 0
	}
	s := n.sess
	id := rec.ClientID
	type claim struct {
		i    int
		done chan queuedAnswer
	}
	var claims []claim
	for _, gc := range groupCopies(rec) {
		m := s.queuedClaimMsg(rec.Queue[gc.i].Msg.Origin(), gc.gk, id)
		c := claim{gc.i, make(chan queuedAnswer, 1)}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			c.done <- n.settleQueuedClaim(id, m)
		}()
		claims = append(claims, c)
	}
	if len(claims) == 0 {
		return 0
	}
	// One bound for the claims before the adoption: a live move (and the
	// client's CONNACK, the previous owner's wait for the seal) waits no
	// longer than it did for claims to a stream electing a leader.
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ForwardTimeout)
	defer cancel()
	drop := make(map[int]bool)
	var late int
	for _, c := range claims {
		d := &rec.Queue[c.i]
		o := d.Msg.Origin()
		var a queuedAnswer
		select {
		case a = <-c.done:
		case <-ctx.Done():
			late++
			n.claimQueuedLate(id, d, c.done)
			continue
		}
		switch {
		case a.by != "":
			drop[c.i] = true
			n.log.Info("cluster: a queued share group copy dropped at its adoption: the group was claimed for another member",
				"client_id", id, "publisher", o.ClientID, "packet_id", o.PacketID, "topic", d.Msg.Topic,
				"sent_packet_id", d.PacketID)
		case a.err != nil:
			n.log.Info("cluster: a queued share group copy not claimed at its adoption; kept", "client_id", id, "err", a.err)
		}
	}
	// One line per adoption with such copies: where a later trace looks
	// for who claimed a group first.
	n.log.Debug("cluster: queued share group copies claimed at the adoption", "client_id", id,
		"claims", len(claims), "dropped", len(drop), "held_for_claim", late)
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

// groupCopy is a queued delivery of a session whose share group is
// claimed for it (groupCopies): its index in the record's queue, and the
// group ("group\x00filter").
type groupCopy struct {
	i  int
	gk string
}

// groupCopies returns the deliveries of rec that claimQueued claims: QoS
// 2, not released, under a publisher's Origin or a copy's name, matching
// exactly one share subscription of rec.
func groupCopies(rec *broker.StoredSession) []groupCopy {
	if len(rec.Queue) == 0 {
		return nil
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
		return nil
	}
	var out []groupCopy
	for i, d := range rec.Queue {
		if d.Msg == nil || d.QoS != 2 || d.Released || d.Msg.Origin().IsZero() {
			continue
		}
		if gk := queuedGroup(groups, d.Msg.Topic); gk != "" {
			out = append(out, groupCopy{i, gk})
		}
	}
	return out
}

// queuedClaimMsg is the claim of share group gk of the message under o
// for id's queued copy: the claim a first routing made (ClaimServed), so
// that whichever lands first, the other reads it as its own.
func (s *sessions) queuedClaimMsg(o broker.Origin, gk, id string) *nats.Msg {
	if o.ClientID == "" { // a copy's name (a clean publisher's message): copyOrigin
		return s.copyClaimMsg(o.Nonce, gk, servedClaim(id))
	}
	return s.claimMsg(originKey{}, o, gk, servedClaim(id))
}

// queuedAnswer is how a queued copy's claim ended: by, the member another
// claim named (the copy is to be dropped); err, given up on (the copy is
// delivered unclaimed).
type queuedAnswer struct {
	by  string
	err error
}

// settleQueuedClaim appends m, the claim of id's queued copy, until
// answered, within claimSettleBound: published again while no stream
// answers (holdAgain, no answer), as settleClaim does.
func (n *Node) settleQueuedClaim(id string, m *nats.Msg) queuedAnswer {
	ctx, cancel := context.WithTimeout(n.ctx, claimSettleBound(n.cfg.ForwardTimeout))
	defer cancel()
	js, err := n.sess.awaitOpenJS(ctx)
	if err != nil {
		return queuedAnswer{err: fmt.Errorf("the session streams are not open here: %w", err)}
	}
	for {
		var (
			ack *jetstream.PubAck
			err error
		)
		f, first := n.fault.leaderlessQueued(id, m)
		if first {
			n.log.Info("cluster: test fault: the claims of a session's queued copies at its adoption fail, no stream leader",
				"client_id", id, "for", queuedLeaderless)
		}
		if f == nil {
			f, err = js.PublishMsgAsync(m)
		}
		if err == nil {
			select {
			case ack = <-f.Ok():
			case err = <-f.Err():
			case <-ctx.Done():
				return queuedAnswer{err: ctx.Err()}
			}
		}
		if err == nil {
			if !ack.Duplicate {
				return queuedAnswer{}
			}
			by, err := claimData(ctx, js, ack)
			if err != nil {
				return queuedAnswer{err: fmt.Errorf("claimed before, by whom not read: %w", err)}
			}
			if by != servedClaim(id) && by != id {
				return queuedAnswer{by: by}
			}
			return queuedAnswer{}
		}
		if !holdAgain(err) && !errors.Is(err, jetstream.ErrAsyncPublishTimeout) && !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			return queuedAnswer{err: err}
		}
		select {
		case <-ctx.Done():
			return queuedAnswer{err: fmt.Errorf("%w (%w)", ctx.Err(), err)}
		case <-time.After(heldRetryWait):
		}
	}
}

// claimQueuedLate holds d, a queued copy of id whose claim was not
// answered before the adoption, for the answer done brings (a copy sent
// before goes on as it is), and logs the outcome.
func (n *Node) claimQueuedLate(id string, d *broker.StoredDelivery, done <-chan queuedAnswer) {
	var gate *broker.QueuedClaim
	if d.PacketID == 0 {
		gate = broker.NewQueuedClaim()
		d.Claim = gate
	}
	o := d.Msg.Origin()
	log := n.log.With("client_id", id, "publisher", o.ClientID, "packet_id", o.PacketID, "topic", d.Msg.Topic,
		"sent_packet_id", d.PacketID)
	log.Info("cluster: a queued share group copy not claimed at its adoption yet: the claim goes on, the copy waits for it")
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		a := <-done
		switch {
		case a.by != "":
			log.Info("cluster: a queued share group copy claimed for another member first after its adoption; dropped if not sent", "claimed_for", a.by)
		case a.err != nil:
			log.Info("cluster: a queued share group copy not claimed after its adoption: a resend elsewhere may give the group a second copy; delivered", "err", a.err)
		default:
			log.Debug("cluster: a queued share group copy claimed after its adoption")
		}
		if gate != nil {
			gate.Answer(a.by == "")
		}
	}()
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
