package cluster

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/packet"
)

// A replicated session op is one message on its client's subject of a
// partition stream (sessions.go), as bytes:
//
//	version   byte
//	kind      byte     broker.OpKind
//	epoch     uvarint  the writing node's owner epoch for the client id
//	then by kind:
//	  SessionPut  expiry (uvarint), will delay ms (uvarint), disconnected
//	              at (unix ms, uvarint, 0: connected), will flag (byte),
//	              then if set: will due at (unix ms, uvarint, 0: not yet
//	              due, the connection is up) and the will (a message);
//	              then the Origins the session got lately (as in
//	              handover.go; absent in older ops)
//	  SessionDel  nothing
//	  SubPut      filter (string), options (byte, as in handover.go),
//	              identifier (uvarint)
//	  SubDel      filter (string)
//	  QueuePut    seq (uvarint), QoS, RETAIN, released (bytes), packet id
//	              (uvarint), subscription ids (uvarint count, uvarints),
//	              the message
//	  QueueDel    seq (uvarint)
//	  InboundPut  packet id (uvarint), then the Origin nonce of an id whose
//	              routing is not confirmed (uvarint; 0 or absent: routed)
//	  InboundDel  packet id (uvarint)
//
// A message is as in handover.go. Times are wall clock: nodes are assumed
// to keep their clocks in step (NTP), as for Message Expiry elsewhere.
//
// Several ops of one client may travel in one message, a pack:
//
//	version   byte
//	opPack    byte
//	count     uvarint
//	then count times: length (uvarint), an op's bytes as above
//
// replayed in order. JetStream syncs every message it stores, on every
// replica: one message per op made those syncs the cluster's limit, and a
// persistent subscriber gets several ops in the time of one sync (sessions.go
// packs the ops of a client that go out together).

// seenMax bounds the Origins a replayed session keeps, as the broker's
// session does.
const seenMax = 1024

// opPack is a pack's kind byte, beyond every broker.OpKind.
const opPack = 0xFF

// appendPack appends the bytes of a pack of the ops ops[i] (at epochs[i]).
func appendPack(b []byte, ops []repOp, epochs []uint64) []byte {
	b = binary.AppendUvarint(append(b, wireVersion, opPack), uint64(len(ops)))
	var one []byte
	for i := range ops {
		one = appendOp(one[:0], ops[i].kind, epochs[i], ops[i].body)
		b = append(binary.AppendUvarint(b, uint64(len(one))), one...)
	}
	return b
}

func encodeOp(op *broker.Op, epoch uint64) ([]byte, error) {
	body, err := encodeOpBody(op, "")
	if err != nil {
		return nil, err
	}
	return appendOp(nil, op.Kind, epoch, body), nil
}

// appendOp appends an op's bytes: its kind and epoch, then its body.
func appendOp(b []byte, kind broker.OpKind, epoch uint64, body []byte) []byte {
	b = binary.AppendUvarint(append(b, wireVersion, byte(kind)), epoch)
	return append(b, body...)
}

// encodeOpBody encodes what follows the epoch.
// here is appendMessage's: the writing node's place Source.
func encodeOpBody(op *broker.Op, here string) ([]byte, error) {
	var b []byte
	var err error
	switch op.Kind {
	case broker.OpSessionPut:
		s := &op.Session
		b = binary.AppendUvarint(b, uint64(s.Expiry))
		b = binary.AppendUvarint(b, uint64(s.WillDelay.Milliseconds()))
		b = binary.AppendUvarint(b, unixMilli(s.DisconnectedAt))
		if s.Will == nil {
			return appendSeen(append(b, 0), s.Seen), nil
		}
		b = binary.AppendUvarint(append(b, 1), unixMilli(s.WillAt))
		if b, err = appendMessage(b, s.Will, ""); err != nil {
			return nil, err
		}
		return appendSeen(b, s.Seen), nil
	case broker.OpSessionDel:
		return b, nil
	case broker.OpSubPut:
		o := op.Sub.Opts
		b = appendString(b, op.Sub.Filter)
		b = append(b, byte(o.QoS)|boolBit(o.NoLocal, 2)|boolBit(o.RetainAsPublished, 3)|o.RetainHandling<<4)
		return binary.AppendUvarint(b, uint64(op.Sub.ID)), nil
	case broker.OpSubDel:
		return appendString(b, op.Sub.Filter), nil
	case broker.OpQueuePut:
		d := &op.Delivery
		b = binary.AppendUvarint(b, d.Seq)
		b = append(b, byte(d.QoS), boolBit(d.Retain, 0), boolBit(d.Released, 0))
		b = binary.AppendUvarint(b, uint64(d.PacketID))
		b = binary.AppendUvarint(b, uint64(len(d.SubIDs)))
		for _, id := range d.SubIDs {
			b = binary.AppendUvarint(b, uint64(id))
		}
		if b, err = appendMessage(b, d.Msg, here); err != nil {
			return nil, err
		}
		return b, nil
	case broker.OpQueueDel:
		return binary.AppendUvarint(b, op.Delivery.Seq), nil
	case broker.OpInboundPut:
		return binary.AppendUvarint(binary.AppendUvarint(b, uint64(op.PacketID)), op.Nonce), nil
	case broker.OpInboundDel:
		return binary.AppendUvarint(b, uint64(op.PacketID)), nil
	}
	return nil, fmt.Errorf("cluster: op kind %d is not a session op", op.Kind)
}

func unixMilli(t time.Time) uint64 {
	if t.IsZero() {
		return 0
	}
	return uint64(max(t.UnixMilli(), 1))
}

func fromUnixMilli(ms uint64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(int64(ms))
}

// replay rebuilds one session from its ops in stream order. An op written
// at an epoch older than one already seen is skipped: it comes from a node
// that had lost the id (paused or cut off) and wrote on; the newer owner's
// state stands.
type replay struct {
	id       string
	maxEpoch uint64
	present  bool
	rec      broker.StoredSession
	subs     map[string]broker.StoredSub
	queue    map[uint64]broker.StoredDelivery
	queued   map[uint64]uint64 // Origin hash -> seq of its delivery in queue (putOnce)
	inbound  map[uint16]uint64 // packet id -> nonce (0: routed)
	seen     []uint64          // Origins the session got (broker.StoredSession.Seen)
	skipped  int
	// applied counts the ops applied (not skipped): the time of the last
	// message that applied one is the session's last op (lastOp).
	applied int
	// passed counts the stream messages read before the subject's last
	// rollup that the rollup left out (applyStored).
	passed int
	since  int // messages applied since the last rollup (or the start)
}

// opMadeHeader is when the newest op of a stream message of a session's
// ops was appended on its node (Unix nanoseconds; packMade).
//
// Readers take a session's last op as the point from which what was held
// for it is not in its record (held subjects are read from then; kept
// copies taken before it are skipped as had: keep.go). Its stored time
// says that only when the op was stored as it was made. An op queued
// while its partition stream had no quorum lands later, and when its node
// lost the id meanwhile, after what that node's disowned copy took and
// kept: read from the stored time, the kept copies were skipped and lost
// (test/jepsen TestClusterFull seed 49, 2026-12-06: n2 resumed from a
// pause, fenced g0m1 at 04.703, kept two g0 messages at 04.774 and
// 04.996, and its SessionPut queued at 04.689 landed at 05.242; n3 read
// from 05.242; TestReproKeptBeforeLateOps). A record holds nothing its
// node took after the op was made, so the made time is the bound; a
// stream message without the header (an older node) counts by its stored
// time, as before. A node back from a silence has not taken what was held
// for it meanwhile until its follower read it: its ops until then count
// as made at the silence's start (silence.go; seed 41).
const opMadeHeader = "Roost-Op-Made"

// packMade is when the newest of ops was appended here.
func packMade(ops []repOp) time.Time {
	var t time.Time
	for _, op := range ops {
		if op.made.After(t) {
			t = op.made
		}
	}
	return t
}

// opHeldHeader is, on a stream message of a session's ops, this node's
// own held subject and the first message there that its follower had not
// applied durably when the oldest of those ops was made: "SEQ NODE"
// (packHeld, formatOpHeld, ownHeldFrom).
//
// A reader read what was held for any node before the session's last op
// as in the session already (readAhead: its node's follower applied it).
// Not so for a node back from a silence (cut off, paused): the others
// held for it meanwhile, and its ops made before its follower read that
// are still its copy's own, sent once its partition stream took them. A
// claim that read the stream then passed over every message held for the
// node before that op (test/jepsen TestClusterFull seed 57, session 21:
// n1 cut off 25.3-35.96 s, 204 messages held for it at 30.5-35.9 s, its
// follower at n1:407; forwards of before the cut reached its copy of ps3
// at the heal, their QueuePuts made at 35.981; its claim back read n1's
// subject from 35.981 on, 5 messages; TestReproLateOpHeld). Nor for a
// live node whose follower is merely behind: the others hold for a live
// node too (its hold keys: a fenced copy's cover, a claim, a restored
// session), and a node killed before its follower applied such a hold
// had made a later op of the session all the same (test/jepsen
// TestClusterFull long faults, seed 1132 on main 9614108: n1 held
// pub0#69 for n2 at 34.5589 (seq 127), n2 made ps3's last op at 34.567
// and was killed at 34.570; n3's claim read n2's subject from 34.567 on
// and the message was lost; TestReproOpHeldKilled). So every op says
// where its node's follower stood, and a reader reads that node's
// subject from SEQ instead (heldBehind), when the message is the
// session's last op. Not an op that counts as made earlier than it was
// (a catch-up's or a live move's reads not done, a return from a
// silence: madeCap), outside the silence's window: its time bounds what
// the session's own reads have still to give it, which its node's
// follower place does not (that follower gives a session nothing held
// before it came).
const opHeldHeader = "Roost-Op-Held-From"

// opWholeHeader marks a stream message whose first op begins a session
// written whole: an adoption's rollup (sessions.adopt, readopt), set
// whether or not the message purges the subject.
//
// An adoption numbers the session's queue anew (the broker's store
// sequences are its own), and what the earlier owners wrote under their
// numbers stays valid only while their ops are in the subject: the
// rollup's purge takes them away. But a rollup sent once another node
// claimed the id goes without its purge (sendEpochs: stale), so as not to
// remove the newer owner's ops. When that newer owner had written
// nothing yet, a reader applied the earlier owner's ops and the adoption
// on top, under two numberings: each message the adoption renumbered
// onto another's number stayed twice, and a QoS 2 one went out twice
// (TestReproHandedReadLate, q2-9: n2's QueuePuts 21 and 22, q1-9 and
// q2-9 behind two probes, beside n3's 19 and 20 for the same messages;
// n3's rollup waited 7.5 s for its partition after n2's kill, and n3 had
// lost the id to n1 meanwhile). So a reader starts the session afresh
// at such a message, as the purge would have left it, unless its epoch
// is older than what it applied (replay.applyMsg): a newer owner's ops
// stand, as the stale rollup's missing purge meant them to.
const opWholeHeader = "Roost-Op-Whole"

// heldBehind is what opHeldHeader said on a session's last op: node's
// held subject is to be read from sequence from; zero: by time.
type heldBehind struct {
	node string
	from uint64
}

// ownHeldFrom returns, for an op appended at now that counts as made at
// made, where this node's follower of its own held subject stands
// (opHeldHeader); away: the others may have held for this node lately
// (awayMarks). 0 for an op made earlier than now outside that window, and
// when the follower never began here: the reader reads by time, as
// before.
func (s *sessions) ownHeldFrom(now, made time.Time, away bool) uint64 {
	if made.Before(now) && !away {
		return 0
	}
	return s.gate.next.Load()
}

// packHeld is the earliest place (repOp.held) among ops, 0 for none.
func packHeld(ops []repOp) uint64 {
	var from uint64
	for _, op := range ops {
		if op.held > 0 && (from == 0 || op.held < from) {
			from = op.held
		}
	}
	return from
}

func formatOpHeld(node string, from uint64) string {
	return strconv.FormatUint(from, 10) + " " + node
}

// opHeld reads stream message m's opHeldHeader; zero for none (an op
// made outside the window, or by an older node) or one unreadable.
func opHeld(m jetstream.Msg) heldBehind {
	h := m.Headers()
	if h == nil {
		return heldBehind{}
	}
	return parseOpHeld(h.Get(opHeldHeader))
}

func parseOpHeld(v string) heldBehind {
	seq, node, ok := strings.Cut(v, " ")
	if !ok || node == "" {
		return heldBehind{}
	}
	from, err := strconv.ParseUint(seq, 10, 64)
	if err != nil {
		return heldBehind{}
	}
	return heldBehind{node: node, from: from}
}

// opTime is when the ops of stream message m (stored at stored) count as
// written, for lastOp: when they were made (opMadeHeader), if that is
// before stored; node clocks may be ahead of the stream leader's.
func opTime(m jetstream.Msg, stored time.Time) time.Time {
	h := m.Headers()
	if h == nil {
		return stored
	}
	v := h.Get(opMadeHeader)
	if v == "" {
		return stored
	}
	ns, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ns <= 0 {
		return stored
	}
	if made := time.Unix(0, ns); made.Before(stored) {
		return made
	}
	return stored
}

// lastOp returns at, the stream time of a message just applied, if it
// applied an op (before: applied before it), else was. A previous
// owner's op written after it lost the id (a restarted node dropping its
// restored copy, say) is skipped, and must not count as the session's
// last op either: what was held for a node is read from that time on,
// and the messages held between the real last op and the stale one would
// reach the session from nobody (TestClusterFull seed 42: 93 acknowledged
// messages held for a killed node, lost for ps3 behind its restarted
// copy's "session ended" op).
func (r *replay) lastOp(before int, at, was time.Time) time.Time {
	if r.applied > before {
		return at
	}
	return was
}

func newReplay(id string) *replay {
	r := &replay{id: id}
	r.reset()
	return r
}

func (r *replay) reset() {
	r.present = false
	r.rec = broker.StoredSession{ClientID: r.id}
	r.subs = map[string]broker.StoredSub{}
	r.queue = map[uint64]broker.StoredDelivery{}
	r.queued = map[uint64]uint64{}
	r.inbound = map[uint16]uint64{}
	r.seen = nil
}

// applyStored applies m, a stream message of the session's subject. A
// rollup (its writer adopted the session and wrote it whole) begins the
// record anew, as it does on the stream's leader, where JetStream removed
// every older message of the subject when it stored the rollup.
//
// A read on a replica can still be given those older messages: readAll
// reads wherever its consumer lands, and a replica restarted after a
// kill truncates its store to its last Raft snapshot and replays its log
// (nats-server, sync_always with replicas > 1), so for a while it holds
// ops its leader removed long ago, and it removes them again (the
// rollup's purge) while the read goes on: the read got a stale owner's
// ops up to some point, none of those after it (purged before the
// consumer reached them), then the rollup. Applied as the session's
// state, the stale ops put back deliveries their client had completed,
// under their old packet ids, and the claim sent them again (test/jepsen
// TestClusterFull seed 48, session 22: g0m1 got pub0#313 twice, n2's
// claim back read n2's own ops of 10 s before, up to pub0#313's
// QueuePut and before its QueueDel, ahead of n1's rollup; its consumer
// most likely on n3, restarted 0.7 s before; TestReadAcrossRollup).
// What the rollup's purge cannot say, an adoption whose rollup went out
// without it, its first pack says (applyMsg).
func (r *replay) applyStored(m jetstream.Msg) error {
	if h := m.Headers(); h != nil && h.Get(jetstream.MsgRollup) == jetstream.MsgRollupSubject {
		r.passed += r.since
		r.since = 0
		r.reset()
		r.maxEpoch, r.skipped = 0, 0
	}
	r.since++
	return r.applyMsg(m)
}

// logPassed logs that the read was given messages the subject's last
// rollup had removed (applyStored), if it was: a replica behind its
// leader.
func (r *replay) logPassed(log *slog.Logger) {
	if r.passed > 0 {
		log.Info("session record: messages before the subject's last rollup read and left out (a replica behind its leader)",
			"client_id", r.id, "messages", r.passed)
	}
}

// apply applies one message's bytes: an op, or a pack of ops.
func (r *replay) apply(b []byte) error {
	if len(b) < 2 || b[0] != wireVersion || b[1] != opPack {
		return r.applyOp(b)
	}
	rd := reader{b: b[2:]}
	n := rd.uvarint()
	for i := uint64(0); i < n && rd.err == nil; i++ {
		size := rd.uvarint()
		if rd.err != nil || size > uint64(len(rd.b)) {
			return errWire
		}
		if err := r.applyOp(rd.b[:size]); err != nil {
			return err
		}
		rd.b = rd.b[size:]
	}
	if rd.err != nil || len(rd.b) != 0 {
		return errWire
	}
	return nil
}

// applyMsg applies one stream message of the session's ops (apply),
// first dropping what it rebuilt so far when the message begins the
// session written whole at an epoch no older than the ops applied
// (opWholeHeader).
func (r *replay) applyMsg(m jetstream.Msg) error {
	b := m.Data()
	if h := m.Headers(); h != nil && h.Get(opWholeHeader) != "" {
		if epoch, ok := firstEpoch(b); ok && epoch >= r.maxEpoch {
			r.reset()
		}
	}
	return r.apply(b)
}

// firstEpoch returns the epoch of the first op in b, a message's bytes
// (an op or a pack of ops); false if b is not readable.
func firstEpoch(b []byte) (uint64, bool) {
	if len(b) >= 2 && b[0] == wireVersion && b[1] == opPack {
		rd := reader{b: b[2:]}
		if rd.uvarint() == 0 {
			return 0, false
		}
		size := rd.uvarint()
		if rd.err != nil || size > uint64(len(rd.b)) {
			return 0, false
		}
		b = rd.b[:size]
	}
	_, epoch, _, err := readOpHead(b)
	return epoch, err == nil
}

// readOpHead reads what every op begins with (appendOp): the version, the
// kind and the epoch, and returns the rest, its body.
func readOpHead(b []byte) (kind broker.OpKind, epoch uint64, body reader, err error) {
	rd := reader{b: b}
	if rd.byte() != wireVersion {
		return 0, 0, rd, errWire
	}
	kind = broker.OpKind(rd.byte())
	epoch = rd.uvarint()
	if rd.err != nil {
		return 0, 0, rd, errWire
	}
	return kind, epoch, rd, nil
}

// applyOp applies one op's bytes.
func (r *replay) applyOp(b []byte) error {
	kind, epoch, rd, err := readOpHead(b)
	if err != nil {
		return err
	}
	if epoch < r.maxEpoch {
		r.skipped++
		return nil
	}
	r.maxEpoch = epoch
	r.applied++
	switch kind {
	case broker.OpSessionPut:
		r.present = true
		r.rec.Expiry = uint32(rd.uvarint())
		r.rec.WillDelay = time.Duration(rd.uvarint()) * time.Millisecond
		r.rec.DisconnectedAt = fromUnixMilli(rd.uvarint())
		r.rec.Will, r.rec.WillAt = nil, time.Time{}
		if rd.byte() == 1 {
			r.rec.WillAt = fromUnixMilli(rd.uvarint())
			r.rec.Will = readMessage(&rd)
		}
		if len(rd.b) > 0 {
			r.seen = readSeen(&rd)
		}
	case broker.OpSessionDel:
		r.reset()
	case broker.OpSubPut:
		s := broker.StoredSub{Filter: rd.string()}
		o := rd.byte()
		s.Opts = packet.SubOptions{QoS: packet.QoS(o & 3), NoLocal: o&4 != 0, RetainAsPublished: o&8 != 0, RetainHandling: o >> 4 & 3}
		s.ID = uint32(rd.uvarint())
		r.subs[s.Filter] = s
	case broker.OpSubDel:
		delete(r.subs, rd.string())
	case broker.OpQueuePut:
		d := broker.StoredDelivery{Seq: rd.uvarint()}
		d.QoS, d.Retain, d.Released = packet.QoS(rd.byte()&3), rd.byte() == 1, rd.byte() == 1
		d.PacketID = uint16(rd.uvarint())
		n := rd.uvarint()
		for i := uint64(0); i < n && rd.err == nil; i++ {
			d.SubIDs = append(d.SubIDs, uint32(rd.uvarint()))
		}
		d.Msg = readMessage(&rd)
		if rd.err == nil {
			r.putOnce(d)
		}
	case broker.OpQueueDel:
		r.del(rd.uvarint())
	case broker.OpInboundPut:
		pid := uint16(rd.uvarint())
		var nonce uint64
		if len(rd.b) > 0 {
			nonce = rd.uvarint()
		}
		r.inbound[pid] = nonce
	case broker.OpInboundDel:
		delete(r.inbound, uint16(rd.uvarint()))
	default:
		return errWire
	}
	if rd.err != nil || len(rd.b) != 0 {
		return errWire
	}
	return nil
}

// putOnce queues d, in place of a delivery of the same Origin under
// another store sequence. One session's broker never queues a message
// twice under one Origin (broker deliverTargets: a copy name or a
// publisher's Origin); two such deliveries in a record are two writers'
// numberings of one copy: a rollup of the session's new owner, and the
// ops of the copy it was handed from, written on at a newer claim's
// epoch. The newer op's is kept: the ops after it, of its epoch, name
// its sequence. Kept both, the record gave the message twice (test/jepsen
// TestClusterFull long faults, seed 970 on main 9614108: n1 moved g0m1
// in live from n3 and rolled it up at e6 (its pub2#54 as s1); n3, which
// had claimed it back (e7), left its handed-over copy to that claim
// ("the copy left to that claim"), and its held follower journalled that
// copy's queue again at e7 (pub2#54 as s19, RejournalMessage); n1's next
// claim read both, and the client got pub2#54 twice on one connection;
// TestReplayOriginOnce).
func (r *replay) putOnce(d broker.StoredDelivery) {
	r.del(d.Seq) // a put of a sequence replaces what it held
	o := d.Msg.Origin()
	if o.IsZero() {
		r.queue[d.Seq] = d
		return
	}
	h := o.Hash()
	if seq, ok := r.queued[h]; ok {
		r.del(seq)
	}
	r.queue[d.Seq], r.queued[h] = d, d.Seq
	// Remembered after the delivery's end too: the session got the
	// message.
	r.seen = append(r.seen, h)
}

// del removes the delivery of store sequence seq.
func (r *replay) del(seq uint64) {
	if d, ok := r.queue[seq]; ok {
		if o := d.Msg.Origin(); !o.IsZero() && r.queued[o.Hash()] == seq {
			delete(r.queued, o.Hash())
		}
		delete(r.queue, seq)
	}
}

// session returns the rebuilt session, nil if there is none.
func (r *replay) session() *broker.StoredSession {
	if !r.present {
		return nil
	}
	rec := r.rec
	rec.Subs, rec.Queue, rec.Inbound, rec.Unrouted = nil, nil, nil, nil
	for _, s := range r.subs {
		rec.Subs = append(rec.Subs, s)
	}
	slices.SortFunc(rec.Subs, func(a, b broker.StoredSub) int { return cmp.Compare(a.Filter, b.Filter) })
	for _, d := range r.queue {
		rec.Queue = append(rec.Queue, d)
	}
	slices.SortFunc(rec.Queue, func(a, b broker.StoredDelivery) int { return cmp.Compare(a.Seq, b.Seq) })
	for pid, nonce := range r.inbound {
		rec.Inbound = append(rec.Inbound, pid)
		if nonce != 0 {
			rec.Unrouted = append(rec.Unrouted, broker.InboundIntent{PacketID: pid, Nonce: nonce})
		}
	}
	slices.Sort(rec.Inbound)
	slices.SortFunc(rec.Unrouted, func(a, b broker.InboundIntent) int { return cmp.Compare(a.PacketID, b.PacketID) })
	// The newest seenMax (the session keeps no more); copies of one
	// Origin are harmless.
	rec.Seen = r.seen[max(0, len(r.seen)-seenMax):]
	return &rec
}
