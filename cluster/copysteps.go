package cluster

import (
	"bytes"
	"slices"

	"github.com/roost-mqtt/roost/broker"
)

// The last exchange steps of a disowned copy, for a claim back that reads
// the stream.
//
// A copy disowned here (another node claimed its id) keeps its ops in
// this node's store only (sessions.lost), from the disown on. But its
// client may still be connected for a moment: the watcher's fence
// (fenceID) and a release request's answer (answer) disown the copy
// first and only then take the connection over, whose settle applies
// what the client had already sent; the copy writes its PUBRELs and
// PUBCOMPs at once, since nothing it appends waits for the streams. Those
// steps (a PUBACK or PUBCOMP that completed a delivery, a PUBREC that
// released one, a packet id a delivery was sent under, a PUBREL of an
// inbound QoS 2 id) are in the session a live move hands over (rec1 is
// exported after the settle, and finishAt takes it: "dup49"), but never in
// the stream. A claim back onto this node that is told to read the stream
// (the newer claimer's move was cut at awaitIn's bound, or its node did
// not answer in time) replaced the copy with the record, and the client,
// whose exchanges the copy had completed, got those QoS 2 messages again
// as new PUBLISHes (TestReproQoS2StepsReadBack: m1..m4 twice, m5's
// PUBLISH after its PUBREC; test/jepsen TestClusterFull seed 49's shape,
// "dup49").
//
// So such a claim takes the copy's steps into the record before it
// adopts it, when the record is the copy's own up to the disown: its last
// op is of this node's claim then (lostFrom's epoch; no newer owner
// wrote, so none had the copy's steps and none made steps of its own).
// What is taken, and why each is safe:
//   - a delivery in both gets the copy's packet id and PUBREC state: the
//     client was sent it under that id, and a resend under another id is
//     a second delivery [MQTT-4.3.3-10 names the id];
//   - a delivery of the record that the copy no longer has, and whose
//     Origin the copy got, was completed (or dropped, expired) by the
//     copy: it goes. Without an Origin (QoS 1, whose duplicates MQTT
//     allows) it stays: a message could be matched by its content only,
//     and one the copy never had would then be dropped: a loss;
//   - the inbound QoS 2 ids are the copy's: a PUBREL it answered freed
//     the id (kept, the client's next message under it would be taken for
//     a resend and not routed: a loss), and an id it took was routed;
//   - the Origins the copy got and no longer queues join the record's
//     (StoredSession.Seen): a kept copy of a message the client completed
//     here (keep.go) is not delivered again. One still queued is left
//     out: the kept copy is how it reaches the session;
//   - a QoS 2 message the copy took after the disown and sent is taken
//     with its packet id and PUBREC state, its Origin joining Seen: its
//     kept copy would go out under a new id, a second delivery to a client
//     that awaits its PUBREL (TestReproQoS2KeptStepsReadBack).
// Other messages the copy took after the disown (not sent yet, or QoS 1)
// are not taken: the held reads bring them (keep.go), as before.

// copySteps takes into rec, id's session read from the stream with its
// last op at epoch, the exchange steps of this node's disowned copy of
// it, if rec is that copy's record up to its disown (above). It returns
// how many deliveries it changed, dropped and added, and whether it took
// the copy's inbound ids. Called under the gate, before the adoption
// replaces the copy.
func (s *sessions) copySteps(rec *broker.StoredSession, epoch uint64) (changed, dropped, added int, took bool) {
	s.mu.Lock()
	m, ok := s.lostFrom[rec.ClientID]
	s.mu.Unlock()
	if !ok || m.epoch == 0 || epoch != m.epoch {
		return 0, 0, 0, false
	}
	cp := s.n.srv.Export(rec.ClientID)
	if cp == nil {
		return 0, 0, 0, false
	}
	return takeSteps(rec, cp, false)
}

// takeSteps takes cp's steps into rec (mergeSteps; own: cp is an owned
// copy, ownCopySteps), its inbound ids and the Origins it got.
func takeSteps(rec, cp *broker.StoredSession, own bool) (changed, dropped, added int, took bool) {
	changed, dropped, added = mergeSteps(rec, cp, own)
	took = !sameInbound(rec, cp)
	rec.Inbound, rec.Unrouted = cp.Inbound, cp.Unrouted
	rec.Seen = finishedSeen(rec.Seen, cp)
	return changed, dropped, added, took
}

// The copy a claim here replaces when this node still owns it.
//
// A claim whose previous owner does not answer reads the session from
// the stream, and the adoption puts that record in the server in place of
// any copy here. The copy here may be this node's own, never disowned:
// the previous owner's claim (a node that then died) was written after
// this node had the session, and this node's own claim came before its
// watcher saw that record (fenceID: newerHere). Such a copy stays in the
// server, with its interest, through the claim's read and its held reads
// (seconds under load), takes what is forwarded to it and replicates
// those ops; the record, read before, has none of them, and the held
// copies of the same messages were taken for delivered (originWatch: the
// copy got them): 26 acknowledged messages lost for ps0 (test/jepsen
// TestClusterFull short faults, seed 534: n3's copy from its first claim,
// n1's claim and kill, n3's claim back reading the stream at 04.05 and
// adopting at 05.81; TestReproOwnCopyReplaced).
//
// So the adoption takes the owned copy's steps as copySteps takes a
// disowned one's, and with them every delivery the copy has that the
// record lacks: nothing was kept for them (keep.go keeps a disowned
// copy's only). One whose Origin the record got was completed by the
// record's owner, if another node wrote after this one's copy: it is not
// taken. One without an Origin (QoS 1) may so come twice, as MQTT allows.

// ownCopySteps takes into rec, id's session read from the stream, what
// this node's own copy of it (in the server, never disowned since this
// node's claim, not a restored copy unsettled) has that rec does not
// (above). Called under the gate, before the adoption replaces the copy,
// when copySteps took nothing.
func (s *sessions) ownCopySteps(rec *broker.StoredSession) (changed, dropped, added int, took bool) {
	id := rec.ClientID
	s.mu.Lock()
	_, lost := s.lost[id]
	_, disowned := s.lostFrom[id]
	s.mu.Unlock()
	if lost || disowned || s.gate.unsettled(id) {
		return 0, 0, 0, false
	}
	cp := s.n.srv.Export(id)
	if cp == nil {
		return 0, 0, 0, false
	}
	return takeSteps(rec, cp, true)
}

// mergeSteps applies the steps of cp, the copy, to rec's deliveries (see
// above) and reports how many it changed, dropped and added. own: cp is
// an owned copy (ownCopySteps), whose deliveries rec lacks are all taken
// but those whose Origin rec got.
func mergeSteps(rec, cp *broker.StoredSession, own bool) (changed, dropped, added int) {
	got := make(map[uint64]bool, len(cp.Seen))
	for _, h := range cp.Seen {
		got[h] = true
	}
	recGot := make(map[uint64]bool, len(rec.Seen))
	for _, h := range rec.Seen {
		recGot[h] = true
	}
	q := rec.Queue[:0]
	matched := map[int]bool{} // indexes in q
	had := map[int]bool{}     // indexes in cp.Queue
	ids := map[uint16]bool{}  // the packet ids of the matched deliveries
	for _, d := range rec.Queue {
		i := slices.IndexFunc(cp.Queue, func(c broker.StoredDelivery) bool { return sameDelivery(d, c) })
		switch {
		case i >= 0:
			if c := cp.Queue[i]; c.PacketID != 0 && (c.PacketID != d.PacketID || c.Released != d.Released) {
				d.PacketID, d.Released = c.PacketID, c.Released
				changed++
			}
			matched[len(q)], had[i] = true, true
			ids[d.PacketID] = true
		case d.Msg != nil && !d.Msg.Origin().IsZero() && got[d.Msg.Origin().Hash()]:
			dropped++
			continue
		}
		q = append(q, d)
	}
	// A QoS 2 message the copy took after the disown and sent: its kept
	// copy, read with the adoption, would go out under a new packet id
	// while the client awaits a PUBREL under the old one, a second
	// delivery. It is taken as the copy has it, its Origin among those
	// the session got (finishedSeen), so the kept copy is not delivered.
	// An owned copy's are taken whatever they are (ownCopySteps).
	for j, c := range cp.Queue {
		if had[j] || c.Msg == nil || !takes(own, c, recGot) {
			continue
		}
		matched[len(q)] = true
		ids[c.PacketID] = true
		q = append(q, c)
		added++
	}
	// A delivery left as the record has it whose packet id the copy
	// gave another (it completed this one: a QoS 1 message, which stays)
	// is sent again under a new id: two in flight under one id, the
	// client's acknowledgement would complete either.
	for i := range q {
		if !matched[i] && q[i].PacketID != 0 && ids[q[i].PacketID] {
			q[i].PacketID, q[i].Released = 0, false
			changed++
		}
	}
	rec.Queue = q
	return changed, dropped, added
}

// takes reports whether c, a delivery of the copy that the record lacks,
// is taken: a disowned copy's QoS 2 one it sent (above); an owned copy's
// (own) unless the record got its Origin (recGot): its owner completed it.
func takes(own bool, c broker.StoredDelivery, recGot map[uint64]bool) bool {
	o := c.Msg.Origin()
	if own {
		return o.IsZero() || !recGot[o.Hash()]
	}
	return c.PacketID != 0 && c.QoS == 2 && !o.IsZero()
}

// sameDelivery reports whether c, a delivery of the copy, is d of the
// record: the same message under its Origin, or without one, the same
// message under the same number.
func sameDelivery(d, c broker.StoredDelivery) bool {
	if d.Msg == nil || c.Msg == nil {
		return false
	}
	if o := d.Msg.Origin(); !o.IsZero() {
		return o == c.Msg.Origin()
	}
	return d.Seq == c.Seq && c.Msg.Origin().IsZero() && d.Msg.From == c.Msg.From &&
		d.Msg.Topic == c.Msg.Topic && bytes.Equal(d.Msg.Payload, c.Msg.Payload)
}

// sameInbound reports whether rec and cp have the same inbound QoS 2 ids.
func sameInbound(rec, cp *broker.StoredSession) bool {
	a, b := slices.Clone(rec.Inbound), slices.Clone(cp.Inbound)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// finishedSeen returns seen with the Origins cp got and no longer queues
// or has sent at QoS 2 (mergeSteps takes those) appended (those not in
// seen already).
func finishedSeen(seen []uint64, cp *broker.StoredSession) []uint64 {
	skip := make(map[uint64]bool, len(seen)+len(cp.Queue))
	for _, h := range seen {
		skip[h] = true
	}
	for _, c := range cp.Queue {
		if c.Msg != nil && !c.Msg.Origin().IsZero() && (c.PacketID == 0 || c.QoS != 2) {
			skip[c.Msg.Origin().Hash()] = true
		}
	}
	for _, h := range cp.Seen {
		if !skip[h] {
			seen = append(seen, h)
		}
	}
	return seen
}
