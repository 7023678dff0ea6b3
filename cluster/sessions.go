package cluster

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/roost-mqtt/roost/broker"
)

// Persistent sessions are replicated: every op the broker journals for a
// session (broker.Store.Append: the session itself with its expiry and
// will, subscriptions, queued and inflight messages, inbound QoS 2 ids) is
// appended, besides the node's own store, to a subject of one of
// Config.Partitions streams, each with Config.Replicas copies synced on
// every write. The stream is chosen by a hash of the client id, the
// subject is the client's (sessPrefix.<partition>.<owner key>): the number
// of replicated objects is fixed when the cluster is created and does not
// grow with sessions or subscriptions.
//
// Wait (the broker's durability point: a PUBACK/PUBREC, a SUBACK, a QoS 2
// PUBLISH or PUBREL wait for it) returns once the node's own store has the
// ops and the stream acknowledged them, that is once a majority of the
// partition's replicas synced them; it fails after Config.ForwardTimeout,
// and the broker then closes the connection without acknowledging: the
// ops stay queued here, so the outcome is unknown (storeFailed). Each
// partition has its own queue and sender (partitions have their own Raft
// leaders: one slow stream does not hold the others back). A sender
// publishes its ops as they come, without waiting for the earlier ones'
// acknowledgements (up to inflightMax ops in flight: a Raft round and
// three fsyncs take milliseconds, and one batch at a time left the
// streams idle between rounds); the ops of one client that go out
// together travel in one message, a pack (packOps: each client's ops stay
// in their order, and only a client's own order matters to its subject).
// A client's next pack waits for the acknowledgement of its pack in
// flight (publishMore): its subject gets its ops in the order it wrote
// them even when a publish is lost and sent again (below); what the client
// writes meanwhile goes in that next pack.
// It takes the acknowledgements in the order it published: an op counts
// as replicated only once every op before it in its partition is. An
// error, a missing acknowledgement, or a leader elected for the partition
// stream since the first unacknowledged op was sent (errElected: nothing
// answers a publish lost in an election) sends the partition's ops again
// from that op, each op with the same Nats-Msg-Id, so that JetStream drops
// the copies of ops it already kept. Nothing is acknowledged to a client while its ops are not
// replicated, and none is lost while the partition has no quorum: they
// wait, bounded by maxBacklog.
//
// Each op carries the writer's owner epoch for the client id (owner.go).
// When a node adopts a session (handed over, or read from the stream
// because its previous owner did not answer) the first op it writes is a
// rollup that purges the subject's older ops; a node that lost the id
// while paused and writes on writes an older epoch, which a reader skips
// (replay in sessions_wire.go).

const (
	sessStream = "ROOST_SESS_"
	sessPrefix = subjPrefix + ".sess"
	// maxBacklog bounds the ops waiting for replication (no quorum):
	// beyond it Wait fails at once, as for a full disk.
	maxBacklog = 1 << 18
	// inflightMax bounds the ops of one partition published and not yet
	// acknowledged: large enough that the windows of many publishers fit
	// in the rounds in flight (each round is a Raft append with a sync on
	// every replica).
	inflightMax = 8192
	// fetchMax bounds one fetch when reading a stream.
	fetchMax = 1024
	// ownersReadMax bounds the pass over the owner records at start.
	ownersReadMax = 2 * time.Minute
)

// errNotReplicated wraps the reason ops could not be replicated in time.
var errNotReplicated = errors.New("cluster: session state not replicated")

// errElected: the oldest pack in flight was sent before its partition
// stream elected a leader, and is not acknowledged. A stream member that is
// not its (caught-up) leader drops a publish without an answer, and so
// does a leader that loses its term before the proposal commits: such a
// pack gets no acknowledgement ever, and waited for one up to
// ForwardTimeout, the bound of the broker's Wait too, so every connection
// whose acknowledgement waited on the partition was closed, outcome
// unknown (cluster/repro TestReproKeptSinceUnfinished at load, session 31:
// n2's batch sent while n3, the leader, was paused; n1 led 1 s later, the
// batch went again 15 s after it was sent). Sent again at once, as after
// any error, it is safe: the new leader has applied every entry of the
// terms before its own before it takes a publish (nats-server's raft
// keeps it out of its leader state until then), so a copy that landed
// is in its duplicate window (Duplicates: 2 min, far past the bound) and
// the one sent again is answered as a duplicate, never stored twice; a
// copy the old leader proposed and lost cannot land later (its term is
// over). TestOpsSentAgainAtElection.
var errElected = errors.New("sent before the partition stream elected a leader; not acknowledged")

// sessions is the replicated broker.Store: the node's own store (local)
// plus the partition streams.
type sessions struct {
	n     *Node
	local broker.Store

	mu      sync.Mutex
	parts   []partQueue // one per partition stream
	pending int         // ops of all partitions not yet acknowledged
	lastErr error
	changed chan struct{} // closed and replaced when pending shrinks
	seq     uint64
	last    broker.Ticket // of the latest Append (claimServed)
	// epochs: this node's owner epoch per client id it claimed (or found
	// itself owner of at start); ops of other ids carry epoch 0.
	epochs map[string]uint64
	// took: the last epoch at which this node claimed each id from
	// another node (sendEpochs).
	took map[string]uint64
	// adopting: ids whose next op is a rollup.
	adopting map[string]bool
	// lost: ids another node claimed after this node's last claim. Their
	// ops from then on (the end of this node's copy) stay in the local
	// store: in the stream, with no op of the new owner after them yet
	// (it may not have read the session, or died first), a reader would
	// take them for the session's end.
	lost map[string]time.Time
	// kept: the lost ids whose copy here has not ended yet: what it
	// takes is kept in the held subject (keep.go).
	kept keptCopies
	// late: what the disowns kept of the messages whose ops were still
	// on their way (keeplate.go).
	late lateKeeps
	// heldBack: ids whose disowned copy here declined a live move's
	// finish because this node claimed them back, with where the copy's
	// keep began (keep.go, heldBack).
	heldBack map[string]time.Time
	// unread: ids whose copy here ended with kept messages that nothing
	// carried to the session, with the loss they were kept since
	// (lostFrom), for a live move back here (keep.go, keptUnread).
	unread map[string]time.Time
	// movedLive: ids whose session left here by a live move since this
	// node's last claim of them (unkeep): its new owner has what the
	// copy took and the places of this node's followers (keepHeld).
	movedLive map[string]bool
	// madeCaps: ids whose ops are made no later than a time (madeCap).
	madeCaps map[string]madeCap
	// keptOut: the kept key announced for each id whose copy's kept
	// messages are unread here (keep.go, announceKeptLocked).
	keptOut map[string]ikey
	// fencedCopy: the kept ids whose copy here was fenced with no live
	// move out pending (keep.go, fencedKeep).
	fencedCopy map[string]bool
	// unsure: clean wills whose claim here was not confirmed
	// (cleanwill.go).
	unsure   unsureWills
	restored []string // ids of sessions the local store had at start
	// restoredCopies: their queued share group copies whose claims are
	// made at the settle (restoredclaim.go); set in Load, taken by
	// onSettled.
	restoredCopies []restoredCopy
	// spared: the restored copies dropped here whose end the local store
	// has not taken (true) or is about to be kept from (false), while
	// their hold keys cover their claimer (spared.go).
	spared map[string]bool

	js    jetstream.JetStream
	ready bool // streams open, epochs of restored sessions known
	// followers apply what was held for dead nodes to their sessions
	// taken here from the stream (held.go), by dead node.
	followers map[string]*heldFollower
	// settleCatch ends the catch-up of the restored sessions settled
	// here (catchup.go), which began at settledAt; nil for none. Used by
	// followOwnHeld's goroutine only.
	settleCatch func()
	settledAt   time.Time
	// landing: the catch-up under way began with a return from a
	// silence and reads on to where the others' holds for this node
	// ended (heldend.go), these answers. Used by followOwnHeld's
	// goroutine only.
	landing *heldEnds
	// keysGone: per restored session settled here, when its hold keys
	// went (onSettled); a hold made under them may land in this node's
	// held subject until keysLanding after (withOwnBehind). Under mu.
	keysGone map[string]time.Time
	// restoreCatch ends the restored sessions' catch-up begun when the
	// node attached (catchRestored), once the settle's has joined it;
	// nil for none. Set before the node's goroutines start.
	restoreCatch func()
	// returnCatch: the end of a catch-up begun when this node came back
	// from a silence (catchUpOnReturn), for followOwnHeld's goroutine to
	// take as it takes settleCatch; nil for none.
	returnCatch atomic.Pointer[func()]
	// returnEnds: the peers' answers for that catch-up (askHeldEnds),
	// taken with it.
	returnEnds atomic.Pointer[heldEnds]
	// silence: a silence this node is back from and has not read the
	// holds of yet, for when its ops count as made (silence.go).
	silence silenceMark
	// persist: the plain filters of the persistent sessions journaled
	// here, announced as persistent interest (persistent.go).
	persist *persistentFilters
	// stalled: the first ticket of an op a test fault keeps from the
	// streams (fault.go); 0 for none.
	stalled broker.Ticket
	// gate: closed once the restored sessions are settled (held.go).
	gate restoredGate
	// arrived: when sessions came here from other nodes (adopt), for
	// followOwnHeld.
	arrived map[string]time.Time
	// left: when another node last claimed each session from here
	// (disown). away: for sessions that came back here by a live move
	// (with their whole record: liveArrival), from when to when they were
	// elsewhere; forgotten when one is taken from the stream here (adopt).
	left map[string]time.Time
	away map[string][2]time.Time
	// lostFrom: when this node lost each id first since its last claim
	// of it (a newer claim elsewhere disowns it again and moves left,
	// not this), or since an earlier loss whose kept copies are still
	// unread (markLostLocked), with its claim epoch then (keptSince).
	lostFrom map[string]lostMark
	// putAcked: the ids whose QueuePut ops the streams acknowledged
	// lately (keeplate.go, landedStale), for a disown to read back.
	putAcked recentIDs
}

// lostMark is when this node lost an id, and its claim epoch then.
type lostMark struct {
	at    time.Time
	epoch uint64
}

// partQueue is one partition's ops not yet acknowledged, in ticket
// order; its sender publishes them (sendPart).
type partQueue struct {
	ops  []repOp
	wake chan struct{} // Append has added ops
	// elect is signalled when the partition stream has elected a leader
	// (watchElections), at electedAt (Unix ns, as received here).
	elect     chan struct{}
	electedAt atomic.Int64
}

// repOp is an op waiting for replication. Its epoch is looked up when it
// is sent: a restored session's epoch is known only once the ownership
// records can be read.
type repOp struct {
	ticket broker.Ticket
	id     string
	kind   broker.OpKind
	body   []byte
	msgID  string
	rollup bool
	// epoch: this node's claim of id when the op was appended; with
	// epochSet it is final, 0 included (0: a restored copy another node
	// owns, read at start: readers skip the op). Without epochSet (an op
	// appended before the node was ready) and 0, the op is sent at the
	// epoch of the claim current when it is sent. Not the epoch at send
	// time otherwise: an op appended under an earlier claim, still
	// queued when the node claims the id again (its partition stream had
	// no quorum meanwhile), belongs to the ownership before, and readers
	// must not take it for the newer owner's state (test/jepsen
	// TestClusterFull seed 44: the next owner's queued messages lost);
	// a restarted node's end of a restored copy owned elsewhere, sent
	// after a claim here set the id's epoch anew, ended the session in
	// the stream (seed 41: Session Present 0, 194 lost).
	epoch    uint64
	epochSet bool
	// made: when the op was appended here (opMadeHeader).
	made time.Time
	// held: the first message held for this node that its own follower
	// had not applied durably when the op was appended; 0 for an op that
	// counts as made earlier, outside the window in which the others may
	// have held for this node lately (ownHeldFrom, opHeldHeader).
	held uint64
	// pack: 0 until the op is first published; then, on the first op
	// of a pack (sessions_wire.go), the number of ops in it, and -1 on
	// the others. A pack is sent again as it was, under its first op's
	// message id, so that JetStream can drop a copy it has.
	pack int
	// late: held back by the test fault queue-late, which holds every
	// later ticket unconfirmed (stalled) until this op is acknowledged.
	late bool
	// local: for a QueuePut of a message without a place, its id here
	// (Message.ID, which the op's body does not carry): the origin key
	// of a message published here, which a disown keeps it under
	// (pendingCopiesLocked); 0 otherwise.
	local uint64
}

// unplacedID is repOp.local for op.
func unplacedID(op *broker.Op) uint64 {
	if op.Kind != broker.OpQueuePut || op.Delivery.Msg == nil || op.Delivery.Msg.Place().Seq != 0 {
		return 0
	}
	return op.Delivery.Msg.ID
}

// Sessions wraps local, the node's own store, as the store the broker is
// to use: see above. Call it before broker.New.
func (n *Node) Sessions(local broker.Store) broker.Store {
	s := &sessions{n: n, local: local, changed: make(chan struct{}), parts: make([]partQueue, n.cfg.Partitions),
		epochs: map[string]uint64{}, took: map[string]uint64{}, adopting: map[string]bool{}, lost: map[string]time.Time{},
		persist: newPersistentFilters(n.local), gate: settledGate()}
	for p := range s.parts {
		s.parts[p].wake = make(chan struct{}, 1)
		s.parts[p].elect = make(chan struct{}, 1)
	}
	s.persist.cover = 3*n.cfg.ForwardTimeout + 2*heartbeatEvery
	s.persist.left = func(id string) { s.unspare(id) }
	n.sess = s
	return s
}

// Load implements broker.Store: the node's own copy, whose ids are noted to
// learn their owners once the cluster is reachable.
func (s *sessions) Load() (*broker.StoredState, error) {
	st, err := s.local.Load()
	if err != nil {
		return nil, err
	}
	for i := range st.Sessions {
		rec := &st.Sessions[i]
		s.restored = append(s.restored, rec.ClientID)
		s.persist.restore(rec)
		s.restoredCopies = append(s.restoredCopies, gateRestored(rec)...)
	}
	s.gate.restore(s.restored) // the node keeps quiet until they are settled (held.go)
	return st, nil
}

// Append implements broker.Store. It does not block (but for the test
// fault ops-after-rollup): replication is the
// sender's job (send).
func (s *sessions) Append(ops ...broker.Op) broker.Ticket {
	t, pause := s.append(ops)
	if pause {
		s.n.log.Info("cluster: test fault: an adoption's rollup queued; the append returns late", "after", rollupPause)
		time.Sleep(rollupPause)
	}
	return t
}

// append is Append; pause says that a test fault (ops-after-rollup) wants
// the caller held once the rollup it names is queued.
func (s *sessions) append(ops []broker.Op) (t broker.Ticket, pause bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t = s.local.Append(s.sparedOpsLocked(ops)...)
	s.last = max(s.last, t)
	now := time.Now()
	away := s.n.away.maybe(now, s.n.heldWatch())
	// Back from a silence (silence.go) and moved in live with places
	// not read yet (madeCap): the earlier of the two.
	back := s.silence.madeAt(now)
	here := s.n.here() // once per batch: the same for every op
	for i := range ops {
		op := &ops[i]
		made := minTime(back, s.madeAt(op.ClientID, now))
		held := s.ownHeldFrom(now, made, away)
		if op.ClientID != "" {
			// Counted before it is replicated: a persistent filter
			// announced late could lose a message held for nobody.
			// A lost id keeps its keys until sweepLost.
			s.persist.apply(op)
		}
		s.n.fault.armsOps(op)
		_, lost := s.lost[op.ClientID]
		copyEnd := false
		if op.ClientID != "" {
			// A disowned copy claimed here again keeps its ops local
			// until the session read from the stream replaces it,
			// its end included: what it takes is kept (keep.go), and
			// its ops in the stream would make a claim here read the
			// kept copies from after them. Its client resuming it
			// (OpSessionPut) ends that.
			was := s.kept.has(op.ClientID)
			s.keepOp(op, lost)
			copyEnd = !lost && was && op.Kind == broker.OpSessionDel
			lost = lost || (was && op.Kind != broker.OpSessionPut)
		}
		// The adoption's first op takes the mark, sent or kept here (an
		// adoption of a lost id: adoptCut, or a claim fenced while it
		// read the stream). Left for a later op, the mark made that one
		// a rollup once the id was claimed here again, which purged the
		// record and left that op alone in it (test/jepsen
		// TestClusterFull seed 48 on branch loss48: ps3's record purged
		// to one QueuePut, no session: Session Present 0, 56 lost).
		// Except the end of the disowned copy that a claim here replaces
		// (Adopt ends the old session first): kept here, it took the
		// mark, and the adopted session went to the stream without its
		// rollup, on top of the record it was read from. The adoption
		// numbers the queue anew, so the record's deliveries under their
		// old numbers stayed when the client completed them under the
		// new ones, and the next owner that read the stream sent them
		// again (test/jepsen TestClusterFull seed 52 on main, session 21:
		// pub2#386 twice at QoS 2 to ps1, n3's epoch 14 adoption).
		rollup := s.adopting[op.ClientID] && !copyEnd
		if !copyEnd {
			delete(s.adopting, op.ClientID)
		}
		if op.ClientID == "" || lost {
			continue // retained messages: the retained stream keeps them; lost ids: see sessions.lost
		}
		s.n.fault.wentOffline(op)
		if s.n.fault.heldQueued(op) {
			s.n.log.Info("cluster: test fault: a message queued for a client whose ops wait for its partition stream", "client_id", op.ClientID)
		}
		if s.n.fault.delaysQueue(op) {
			if s.stalled == 0 {
				s.stalled = t
			}
			s.n.log.Info("cluster: test fault: a session op held from its partition stream", "client_id", op.ClientID, "for", queueLateDelay)
			late, mark := *op, repOp{ticket: t, id: op.ClientID, kind: op.Kind, rollup: rollup, epoch: s.epochs[op.ClientID], epochSet: s.ready, made: made, held: held}
			time.AfterFunc(queueLateDelay, func() { s.sendLate(&late, mark) })
			continue
		}
		if s.n.fault.holdsAdoptOp(op, rollup) {
			if s.stalled == 0 {
				s.stalled = t
			}
			s.n.log.Info("cluster: test fault: a session op held from its partition stream until a later claim read the stream", "client_id", op.ClientID, "kind", op.Kind)
			if s.n.fault.holdAdoptOp(lateOp{*op, repOp{ticket: t, id: op.ClientID, kind: op.Kind, rollup: rollup, epoch: s.epochs[op.ClientID], epochSet: s.ready, made: made, held: held}}) {
				id := op.ClientID
				time.AfterFunc(adoptOpsLateMax, func() {
					if late := s.n.fault.releaseAdoptOps(id); len(late) > 0 {
						s.n.log.Info("cluster: test fault: adopt-ops-late's ops released at its bound, no later claim here having read the stream", "client_id", id, "ops", len(late), "after", adoptOpsLateMax)
						for _, l := range late {
							s.sendLate(&l.op, l.mark)
						}
					}
				})
			}
			continue
		}
		stop, first := s.n.fault.stopsOps(op)
		if stop || s.n.fault.stalls(op) {
			if s.stalled == 0 {
				s.stalled = t
				s.n.log.Info("cluster: test fault: a session op kept from its partition stream", "client_id", op.ClientID, "kind", op.Kind)
			}
			if first {
				go s.stoppedOps(op.ClientID, t)
			}
			continue
		}
		body, err := encodeOpBody(op, here)
		if err != nil {
			// Cannot happen for what the broker accepted; log and let
			// Wait fail rather than claim the op is kept.
			s.n.log.Error("cluster: session op not encodable", "client_id", op.ClientID, "kind", op.Kind, "err", err)
			s.lastErr = err
			continue
		}
		s.seq++
		q := &s.parts[s.partition(op.ClientID)]
		q.ops = append(q.ops, repOp{ticket: t, id: op.ClientID, kind: op.Kind, body: body,
			msgID: s.n.inc + "." + strconv.FormatUint(s.seq, 36), rollup: rollup,
			epoch: s.epochs[op.ClientID], epochSet: s.ready, made: made, held: held, local: unplacedID(op)})
		s.pending++
		if rollup && s.n.fault.pausesAfterRollup(op.ClientID) {
			pause = true
		}
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
	return t, pause
}

// sendLate queues op, held back by the test fault queue-late, for its
// partition stream, as append would have (r: its fields but the body and
// message id); the ops after it are confirmed once it is (acknowledged).
func (s *sessions) sendLate(op *broker.Op, r repOp) {
	s.mu.Lock()
	defer s.mu.Unlock()
	body, err := encodeOpBody(op, s.n.here())
	if err != nil {
		s.lastErr = err
		return
	}
	s.seq++
	r.body, r.msgID, r.late = body, s.n.inc+"."+strconv.FormatUint(s.seq, 36), true
	q := &s.parts[s.partition(op.ClientID)]
	q.ops = append(q.ops, r)
	s.pending++
	select {
	case q.wake <- struct{}{}:
	default:
	}
	s.n.log.Info("cluster: test fault: a held session op sent to its partition stream", "client_id", op.ClientID)
}

// stoppedOps logs, for a test fault (stop-ops), once the op of ticket t
// that stopped the replication is in this node's own store: a test
// kills the node then, as if it died right after it journalled it.
func (s *sessions) stoppedOps(id string, t broker.Ticket) {
	err := s.local.Wait(t)
	s.n.log.Info("cluster: test fault: no session op replicated from here on; the first is in this node's own store", "client_id", id, "err", err)
}

// Wait implements broker.Store. One that waited slowWait or more is
// logged with the ops that held it back then: an acknowledgement waits
// for every earlier op of every partition, other sessions' too, and a
// client's bound may run out first.
func (s *sessions) Wait(t broker.Ticket) error {
	if err := s.local.Wait(t); err != nil {
		return err
	}
	start := time.Now()
	var behind []string
	err := s.waitReplicated(t, start, &behind)
	if took := time.Since(start); took >= slowWait {
		s.n.log.Info("cluster: an acknowledgement waited for the partition streams",
			"took", took.Round(time.Millisecond), "behind", behind, "err", err)
	}
	return err
}

// slowWait: a wait of an acknowledgement this long is logged.
const slowWait = time.Second

// waitReplicated waits until every op of ticket t or before is
// acknowledged. Once it has waited slowWait (a wait's common case is a
// few milliseconds: the hot path formats nothing), it notes in behind
// which ops it still waits for.
func (s *sessions) waitReplicated(t broker.Ticket, start time.Time, behind *[]string) error {
	timer := time.NewTimer(s.n.cfg.ForwardTimeout)
	defer timer.Stop()
	for {
		s.mu.Lock()
		if s.replicated(t) {
			s.mu.Unlock()
			return nil
		}
		if *behind == nil && time.Since(start) >= slowWait {
			*behind = s.behind(t)
		}
		if s.pending > maxBacklog {
			s.mu.Unlock()
			return fmt.Errorf("%w: %d ops waiting for a quorum: %w", errNotReplicated, maxBacklog, broker.ErrStoreFull)
		}
		ch, last := s.changed, s.lastErr
		s.mu.Unlock()
		select {
		case <-ch:
		case <-s.n.ctx.Done():
			// Stopping: the partition senders have stopped, and the
			// ops will not be replicated by this process. Waited for
			// in turn, each forward the node was still delivering
			// took forward_timeout, and a stop took minutes.
			return fmt.Errorf("%w: the node is stopping", errNotReplicated)
		case <-timer.C:
			if last == nil {
				last = errors.New("the partition streams are not ready (no quorum yet)")
			}
			if *behind == nil {
				s.mu.Lock()
				*behind = s.behind(t)
				s.mu.Unlock()
			}
			return fmt.Errorf("%w within %v: %w", errNotReplicated, s.n.cfg.ForwardTimeout, last)
		}
	}
}

// behind names, per partition, the first op of ticket t or before not yet
// acknowledged and how many such ops there are. s.mu is held.
func (s *sessions) behind(t broker.Ticket) []string {
	var out []string
	if s.stalled != 0 && t >= s.stalled {
		out = append(out, "a test fault's stalled op")
	}
	for p := range s.parts {
		ops := s.parts[p].ops
		n := 0
		for n < len(ops) && ops[n].ticket <= t {
			n++
		}
		if n > 0 {
			out = append(out, fmt.Sprintf("partition %d: %d ops from %s's %v", p, n, ops[0].id, ops[0].kind))
		}
	}
	return out
}

// replicated reports whether every op of ticket t or before is
// acknowledged: each partition's queue is in ticket order. s.mu is held.
func (s *sessions) replicated(t broker.Ticket) bool {
	if s.stalled != 0 && t >= s.stalled {
		return false
	}
	for p := range s.parts {
		if ops := s.parts[p].ops; len(ops) > 0 && ops[0].ticket <= t {
			return false
		}
	}
	return true
}

// Close implements broker.Store: the node's own store is closed; ops not
// replicated by now are in it, and were not acknowledged to anyone.
func (s *sessions) Close() error { return s.local.Close() }

// Hold and Release pass the broker's grouping of a QoS 2 publish (its
// packet id and every delivery durable together or not at all) to the
// local store, so a node restarting from its own copy after kill -9 does
// not keep the id without the deliveries. The partition streams replicate
// the id and the deliveries separately: across streams the group is not
// atomic (bench/jepsen/RESULTS.md, part 1 finding 4).
func (s *sessions) Hold() {
	if g, ok := s.local.(broker.Grouper); ok {
		g.Hold()
	}
}

var _ broker.Grouper = (*sessions)(nil)

// Release ends a Hold.
func (s *sessions) Release() {
	if g, ok := s.local.(broker.Grouper); ok {
		g.Release()
	}
}

// Healthy passes the node's own store's health on, when it has one.
func (s *sessions) Healthy() error {
	if h, ok := s.local.(broker.HealthChecker); ok {
		return h.Healthy()
	}
	return nil
}

func (s *sessions) partition(id string) int {
	h := fnv.New32a()
	h.Write([]byte(id))
	return int(h.Sum32() % uint32(s.n.cfg.Partitions))
}

func (s *sessions) subject(id string) string {
	return sessPrefix + "." + strconv.Itoa(s.partition(id)) + "." + ownerKey(id)
}

func streamName(p int) string { return sessStream + strconv.Itoa(p) }

// setEpoch notes this node's claim of id at epoch; fromOther says that
// another node may have written the id's ops since this node's claim
// before (it replaced another node's record, or one of its own that was
// never followed by the session coming here).
func (s *sessions) setEpoch(id string, epoch uint64, fromOther bool) {
	s.mu.Lock()
	s.epochs[id] = epoch
	if fromOther {
		s.took[id] = epoch
	}
	delete(s.lost, id)
	delete(s.movedLive, id)
	s.mu.Unlock()
}

// disown notes that another node claimed id after this node's last claim:
// see sessions.lost.
func (s *sessions) disown(id string) {
	s.gate.disown(id) // before: the held messages applied up to now are replicated (held.go)
	s.mu.Lock()
	now := time.Now()
	if _, again := s.lost[id]; !again {
		s.markLostLocked(id, now) // keep.go
	}
	s.lost[id] = now
	s.kept.set(id, true)
	s.persist.awayOn(id)
	if s.left == nil {
		s.left = map[string]time.Time{}
	}
	s.left[id] = now
	for k, t := range s.left {
		if now.Sub(t) > arrivedKeep {
			delete(s.left, k)
		}
	}
	for k, m := range s.lostFrom {
		if now.Sub(m.at) > arrivedKeep {
			delete(s.lostFrom, k)
		}
	}
	for k, t := range s.unread {
		if now.Sub(t) > arrivedKeep {
			delete(s.unread, k)
		}
	}
	for k := range s.keptOut {
		s.announceKeptLocked(k) // its loss or mark may have gone above
	}
	// What the copy took before, its ops not in the stream yet: kept
	// too (keeplate.go); and what it took before whose ops are in the
	// stream behind a newer owner's, which every reader skips
	// (landedStale). Without JetStream nothing went out.
	var late []pendingCopy
	var unkept int
	var landed bool
	epoch := s.epochs[id]
	if s.js != nil {
		late, unkept = s.pendingCopiesLocked(id)
		landed = epoch != 0 && s.putAcked.has(id)
	}
	s.mu.Unlock()
	if len(late) > 0 || landed {
		s.n.keepLate(id, late, landed, epoch)
	}
	if unkept > 0 {
		s.n.log.Warn("cluster: messages a copy took before its disown, their ops not in the stream yet, not kept: routed by another node without a place",
			"client_id", id, "messages", unkept)
	}
}

// lostAt reports when another node claimed id after this node's last
// claim (sessions.lost).
func (s *sessions) lostAt(id string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	at, ok := s.lost[id]
	return at, ok
}

// lostHere reports whether another node claimed id after this node's
// last claim (sessions.lost).
func (s *sessions) lostHere(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.lost[id]
	return ok
}

// sweepLost forgets the ids lost before cutoff: the sessions they named
// have ended here long since (fenceGrace).
func (s *sessions) sweepLost(cutoff time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, at := range s.lost {
		if at.Before(cutoff) {
			delete(s.lost, id)
			s.unkeepLocked(id, "long lost", true)
			s.persist.leave(id) // it lives on its new owner
		}
	}
}

// adopt marks id's next op as a rollup: the node is about to journal a
// whole session it adopted.
func (s *sessions) adopt(id string) {
	s.mu.Lock()
	s.adopting[id] = true
	now := time.Now()
	if s.arrived == nil {
		s.arrived = map[string]time.Time{}
	}
	s.arrived[id] = now
	delete(s.away, id)
	delete(s.heldBack, id) // this adoption's reads are its own (keep.go)
	delete(s.unread, id)
	s.announceKeptLocked(id)
	for k, t := range s.arrived {
		if now.Sub(t) > arrivedKeep {
			delete(s.arrived, k)
		}
	}
	s.mu.Unlock()
}

// readopt marks id's next op as a rollup for its copy here, adopted anew
// by a claim here that resumes it (owners.resumeHere): journalled whole,
// as adopt's, but the session did not arrive now: it was here all along,
// and what this node's own follower applies to the sessions that were
// here when it was held (followOwnHeld, arrived) is still its. Its keep's
// place for a move back (heldBack) goes: the new copy has what it kept.
func (s *sessions) readopt(id string) {
	s.mu.Lock()
	s.adopting[id] = true
	delete(s.heldBack, id)
	delete(s.unread, id)
	s.announceKeptLocked(id)
	s.mu.Unlock()
}

// liveArrival notes that id came here by a live move, now: if it had
// left this node before, it was elsewhere since then.
func (s *sessions) liveArrival(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	left, ok := s.left[id]
	if !ok {
		return
	}
	if s.away == nil {
		s.away = map[string][2]time.Time{}
	}
	s.away[id] = [2]time.Time{left, now}
	for k, span := range s.away {
		if now.Sub(span[1]) > arrivedKeep {
			delete(s.away, k)
		}
	}
}

// wasAway reports whether id, here again by a live move, was elsewhere
// when a message was held at at: it got the message there (forwarded to
// its node then, or read by a claim there), and its record came whole
// with the move.
func (s *sessions) wasAway(id string, at time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	span, ok := s.away[id]
	return ok && !at.Before(span[0]) && at.Before(span[1])
}

// arrivedKeep bounds how long a session's arrival is remembered
// (followOwnHeld: far beyond how late the follower applies a message).
const arrivedKeep = 10 * time.Minute

// arrivals returns when the sessions that came here from other nodes came.
func (s *sessions) arrivals() map[string]time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.arrived)
}

// open creates or opens the partition streams, then learns the owner of
// each session the node's own store restored: those still this node's get
// their epoch; others were taken over while this node was down, and are
// dropped here without their will (the owner has the session, will
// included). Then replication starts.
func (s *sessions) open(ctx context.Context, _ jetstream.JetStream) error {
	// A client of its own, to have a whole batch in flight at once.
	// (A publish that gets no answer is given up after ForwardTimeout, so
	// that it does not hold a place among the pending ones for good.)
	js, err := jetstream.New(s.n.eng.nc, jetstream.WithPublishAsyncMaxPending(2*inflightMax*s.n.cfg.Partitions),
		jetstream.WithPublishAsyncTimeout(s.n.cfg.ForwardTimeout))
	if err != nil {
		return err
	}
	for p := range s.n.cfg.Partitions {
		if err := s.openStream(ctx, js, p); err != nil {
			return err
		}
	}
	if err := s.checkPartitions(ctx, js); err != nil {
		return err
	}
	kv := s.n.own.bucket()
	if kv == nil {
		return errNotReady
	}
	return s.start(ctx, js)
}

// openStream opens or creates partition p's stream, with a create that is
// idempotent when another node made it with the same configuration (and
// then answered by its members, where an info request waits for its
// leader: assets.go); one made with another configuration is
// checkPartitions' business. Each request is bounded by followAttempt:
// the caller's next try (after 100 ms) finds the stream faster than a
// long wait would.
func (s *sessions) openStream(ctx context.Context, js jetstream.JetStream, p int) error {
	ctx, cancel := context.WithTimeout(ctx, followAttempt)
	defer cancel()
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: streamName(p), Description: "Roost persistent sessions, partition " + strconv.Itoa(p),
		Subjects: []string{sessPrefix + "." + strconv.Itoa(p) + ".>"}, Storage: jetstream.FileStorage,
		Replicas: s.n.cfg.Replicas, MaxMsgSize: -1, AllowRollup: true, Duplicates: 2 * time.Minute,
		Metadata: map[string]string{"roost_partitions": strconv.Itoa(s.n.cfg.Partitions)},
	})
	if err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return fmt.Errorf("session stream %d: %w", p, err)
	}
	return nil
}

// start learns the owners of the restored sessions and starts replicating.
func (s *sessions) start(ctx context.Context, js jetstream.JetStream) error {
	s.mu.Lock()
	s.js = js // for eachOwner; ops are not sent before ready
	s.mu.Unlock()
	if d := s.n.fault.ownersReadDelay(); d > 0 && len(s.restored) > 0 {
		s.n.log.Info("cluster: test fault: the owner records are read late", "after", d)
		select {
		case <-time.After(d):
		case <-s.n.ctx.Done():
			return s.n.ctx.Err()
		}
	}
	began := time.Now()
	// Not bounded by the caller's attempt (openAssets: 10 s, for requests
	// that get no answer at all): the pass takes longer the more clients
	// the bucket holds, and readAll itself ends one that stops making
	// progress.
	rctx, cancel := context.WithTimeout(s.n.ctx, ownersReadMax)
	recs, err := s.owners(rctx)
	cancel()
	if err != nil {
		return err
	}
	if len(s.restored) > 0 {
		s.n.log.Info("cluster: owners of restored sessions read", "sessions", len(s.restored),
			"took", time.Since(began).Round(time.Millisecond))
	}
	var gone []string
	for _, id := range s.restored {
		r := recs[id]
		if r.node == s.n.cfg.Node || r.node == "" {
			s.setEpoch(id, r.epoch, false)
		} else {
			gone = append(gone, id)
		}
	}
	// Their end is this node's only (as after a fence): queued for the
	// stream, it would be sent at the epoch of this node's claim of the
	// id current by then, and a claim here (the client reconnecting to
	// this node) may come first while the partition stream has no
	// quorum: the end would then end the session in the stream, and the
	// next claim start the client afresh (TestReproRestoredSessionEnd).
	for _, id := range gone {
		s.disown(id)
	}
	for _, id := range gone {
		// Its hold keys stay a while, and its record with them: its
		// owner may have claimed it moments ago and still be reading
		// it (held.go, spared.go).
		if s.dropRestored(id) {
			s.n.log.Info("restored session dropped: another node owns it now", "client_id", id)
		}
		s.gate.end(id)
	}
	if len(gone) > 0 {
		s.n.fault.droppedRestored(s.n)
	}
	s.mu.Lock()
	s.js, s.ready, s.restored = js, true, nil
	s.setQueuedEpochsLocked()
	s.mu.Unlock()
	s.watchElections()
	s.n.wg.Add(2 + len(s.parts))
	for p := range s.parts {
		go s.sendPart(p) // with the ops appended before now
	}
	go s.janitor()
	go s.followOwnHeld()
	s.n.log.Info("cluster session streams ready", "partitions", s.n.cfg.Partitions, "replicas", s.n.cfg.Replicas)
	return nil
}

// setQueuedEpochsLocked gives the ops appended before the node was ready
// the epochs known now (the restored sessions' owners read): 0 for a
// restored session another node owns, whose ops are then skipped by
// readers of the stream. s.mu held.
func (s *sessions) setQueuedEpochsLocked() {
	for p := range s.parts {
		for i := range s.parts[p].ops {
			if op := &s.parts[p].ops[i]; !op.epochSet {
				op.epoch, op.epochSet = s.epochs[op.id], true
			}
		}
	}
}

type ownerRec struct {
	node  string
	epoch uint64
}

// owners reads the owner records of the restored sessions' ids, all of the
// bucket in one pass rather than one request per session: a node restarts
// with as many sessions as it had.
func (s *sessions) owners(ctx context.Context) (map[string]ownerRec, error) {
	out := map[string]ownerRec{}
	if len(s.restored) == 0 {
		return out, nil
	}
	want := make(map[string]bool, len(s.restored))
	for _, id := range s.restored {
		want[id] = true
	}
	err := s.eachOwner(ctx, func(id, owner string, epoch uint64, _ bool) {
		if want[id] {
			out[id] = ownerRec{owner, epoch}
		}
	})
	return out, err
}

// checkPartitions refuses to run with another partition count than the
// cluster was created with: ids would hash to other streams.
func (s *sessions) checkPartitions(ctx context.Context, js jetstream.JetStream) error {
	ctx, cancel := context.WithTimeout(ctx, followAttempt)
	defer cancel()
	st, err := js.Stream(ctx, streamName(0))
	if err != nil {
		return fmt.Errorf("session stream 0: %w", err)
	}
	if got := st.CachedInfo().Config.Metadata["roost_partitions"]; got != strconv.Itoa(s.n.cfg.Partitions) {
		return fmt.Errorf("cluster.partitions is %d here but the cluster was created with %s", s.n.cfg.Partitions, got)
	}
	return nil
}

// sendPart replicates partition p's ops until the node stops: it
// publishes them in order as they come, up to inflightMax unacknowledged,
// and takes their acknowledgements in the same order (see above).
func (s *sessions) sendPart(p int) {
	defer s.n.wg.Done()
	q := &s.parts[p]
	inflight := packsInFlight{of: map[string]int{}} // the packs q.ops begins with, in order
	backoff := 50 * time.Millisecond
	for {
		var err error
		held := s.n.fault.holdsOps(p, s.partition) && s.queued(q)
		if untilLost, freed := s.n.fault.holdsOpsUntilLost(p, s.partition, s.lostAt); untilLost {
			held = s.queued(q)
		} else if freed {
			s.n.log.Info("cluster: test fault: the ops held back go out after the claim elsewhere", "partition", p)
		}
		if held && s.n.fault.firstHeldOps() {
			s.n.log.Info("cluster: test fault: the partition stream takes no ops of this node until the client id is given up", "partition", p)
		}
		if untilLanded, freed := s.n.fault.holdsUntilLanded(p, s.partition); untilLanded {
			held = s.queued(q)
		} else if freed {
			s.n.log.Info("cluster: test fault: the ops held back go out before the claim is acted on here", "partition", p)
		}
		if untilKept, freed := s.n.fault.holdsOpsUntilKept(p, s.partition); untilKept {
			held = s.queued(q)
		} else if freed {
			s.n.log.Info("cluster: test fault: the ops held back go out after the disowned copy kept messages", "partition", p)
		}
		if after, first := s.n.fault.holdsAfterRollup(p, s.partition); after {
			held = true
			if first {
				s.n.log.Info("cluster: test fault: the partition stream takes no more ops of this node after the rollup", "partition", p)
			}
		}
		if s.n.fault.withoutQuorum(p, s.partition) {
			err = errors.New("test fault no-quorum: the partition stream takes nothing")
		} else if held {
			err = errors.New("test fault ops-late: the partition stream takes nothing yet")
		} else if err = s.publishMore(q, &inflight); err == nil && len(inflight.packs) == 0 {
			if s.n.fault.landedAfterLost(p, s.partition) {
				s.n.log.Info("cluster: test fault: the ops held back are in the stream", "partition", p)
			}
			select {
			case <-s.n.ctx.Done():
				return
			case <-q.wake:
				continue
			}
		}
		if err == nil {
			var done int
			if done, err = s.awaitAcks(q, inflight.packs); done > 0 {
				for _, pk := range inflight.packs[:done] {
					if pk.rollup {
						s.n.fault.ackedRollup(pk.id)
					}
				}
				s.acknowledged(q, inflight.drop(done))
				backoff = 50 * time.Millisecond
			}
		}
		if s.n.ctx.Err() != nil {
			return
		}
		if err == nil {
			continue
		}
		// Everything from the first unacknowledged op goes again, in
		// order; JetStream drops the copies it already has (message id).
		s.mu.Lock()
		s.lastErr = err
		waiting := len(q.ops)
		s.mu.Unlock()
		inflight.reset()
		s.n.log.Warn("cluster: session ops not replicated yet; retrying", "partition", p, "waiting", waiting, "err", err, "backoff", backoff)
		select {
		case <-s.n.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// watchElections signals each partition's sender when nats-server
// announces a new leader of its stream (the advisory every stream leader
// sends when it takes over, to the stream's account, so to every node):
// the packs sent before it and not acknowledged go again (errElected).
// Without it (the subscription failed: the node is stopping) they go
// again at ForwardTimeout, as before.
func (s *sessions) watchElections() {
	prefix := server.JSAdvisoryStreamLeaderElectedPre + "." + sessStream
	_, err := s.n.eng.nc.Subscribe(server.JSAdvisoryStreamLeaderElectedPre+".*", func(m *nats.Msg) {
		p, err := strconv.Atoi(strings.TrimPrefix(m.Subject, prefix))
		if !strings.HasPrefix(m.Subject, prefix) || err != nil || p < 0 || p >= len(s.parts) {
			return // another stream's
		}
		q := &s.parts[p]
		q.electedAt.Store(time.Now().UnixNano())
		select {
		case q.elect <- struct{}{}:
		default:
		}
	})
	if err != nil {
		s.n.log.Warn("cluster: partition stream elections not watched; ops lost in one go again at forward_timeout", "err", err)
	}
}

// inflightPack is a published pack's acknowledgement to come.
type inflightPack struct {
	f   jetstream.PubAckFuture
	at  time.Time // published
	ops int
	id  string // the client whose ops it carries
	// rollup: it purged the subject's earlier ops (a test fault,
	// ops-after-rollup, watches for its acknowledgement).
	rollup bool
}

// packsInFlight is a partition's published packs not acknowledged yet, in
// order, and how many of them each client has (publishMore).
type packsInFlight struct {
	packs []inflightPack
	of    map[string]int
}

// push adds p, whose client publishMore counted in f.of when it took p.
func (f *packsInFlight) push(p inflightPack) {
	f.packs = append(f.packs, p)
}

// drop forgets the first n packs, acknowledged, and returns their ops.
func (f *packsInFlight) drop(n int) int {
	ops := 0
	for _, p := range f.packs[:n] {
		ops += p.ops
		if f.of[p.id]--; f.of[p.id] == 0 {
			delete(f.of, p.id)
		}
	}
	clear(f.packs[:n]) // their futures, for the collector
	f.packs = f.packs[n:]
	return ops
}

// reset forgets every pack: they are all to be sent again.
func (f *packsInFlight) reset() {
	f.packs = nil
	clear(f.of)
}

// packMax bounds the op bytes of a pack: far below the cluster's least
// NATS payload (minMaxPayload); an op beyond it goes alone.
const packMax = 1 << 20

// rollupMax bounds the bytes of a rollup's pack, which carries the whole
// session it adopts (packOps) past packMax: below the least NATS payload
// with room for the headers. opFrame bounds what a pack adds to an op's
// body (its length, version, kind and epoch).
const (
	rollupMax = minMaxPayload - 64<<10
	opFrame   = 16
)

// publishMore publishes the ops of q not yet in flight, as many as fit
// under inflightMax, and adds their packs to inflight. It stops at a pack
// of a client that has one in flight: a client's packs reach its subject
// in the order it wrote them. Published behind it, a pack could be
// stored first when the earlier one got no acknowledgement (a leader
// change) and was sent again: a reader in between saw the later ops
// without the earlier ones, and a rollup sent again removed the ops
// stored before it, whose acknowledgements (JetStream drops the copies
// by message id) came all the same (TestReproOpOrderRollup; test/jepsen
// TestClusterFull seed 41: ps0's record held a later op of n2 without
// n2's adoption, 141 acknowledged messages lost).
func (s *sessions) publishMore(q *partQueue, inflight *packsInFlight) error {
	from := 0
	for _, f := range inflight.packs {
		from += f.ops
	}
	s.mu.Lock()
	to := takePacks(q.ops, from, min(len(q.ops), max(inflightMax, from)), inflight.of)
	if to == from {
		s.mu.Unlock()
		return nil
	}
	batch := append([]repOp(nil), q.ops[from:to]...) // Append may grow q.ops meanwhile
	epochs, stale := s.sendEpochs(batch)
	s.mu.Unlock()
	now := time.Now()
	for i := 0; i < len(batch); i += batch[i].pack {
		head, n := &batch[i], batch[i].pack
		m := s.packMsg(batch[i:i+n], epochs[i:i+n])
		var f jetstream.PubAckFuture
		if head.rollup {
			// Readers start the session afresh here, purged or not
			// (opWholeHeader).
			m.Header.Set(opWholeHeader, "1")
		}
		if head.rollup && !stale[i] {
			m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
			f = s.n.fault.losesRollup(head.id, m)
		} else if head.rollup {
			s.n.log.Info("cluster: an adoption's rollup sent after the client id was claimed elsewhere; without its purge",
				"client_id", head.id, "epoch", epochs[i])
		}
		if f == nil {
			var err error
			if f, err = s.js.PublishMsgAsync(m); err != nil {
				return err
			}
		} else {
			s.n.log.Warn("cluster: test fault: a rollup is not published", "client_id", head.id)
		}
		inflight.push(inflightPack{f, now, n, head.id, head.rollup && !stale[i]})
	}
	return nil
}

// packMsg returns the stream message of one pack, ops (their epochs):
// its first op's message id, when its newest op was made (opMadeHeader)
// and where this node's held follower stood at its oldest (opHeldHeader).
func (s *sessions) packMsg(ops []repOp, epochs []uint64) *nats.Msg {
	head := &ops[0]
	m := nats.NewMsg(s.subject(head.id))
	if len(ops) == 1 {
		m.Data = appendOp(nil, head.kind, epochs[0], head.body)
	} else {
		m.Data = appendPack(nil, ops, epochs)
	}
	m.Header.Set(jetstream.MsgIDHeader, head.msgID)
	m.Header.Set(opMadeHeader, strconv.FormatInt(packMade(ops).UnixNano(), 10))
	if held := packHeld(ops); held > 0 {
		m.Header.Set(opHeldHeader, formatOpHeld(s.n.cfg.Node, held))
	}
	return m
}

// takePacks packs the ops of ops from from on, up to limit, and returns
// where the packs to publish now end: before the first pack of a client
// that has one in flight (of: packs in flight by client, which it counts
// the taken packs in). A pack formed before goes whole, beyond limit too.
func takePacks(ops []repOp, from, limit int, of map[string]int) int {
	to := from
	for to < limit {
		if ops[to].pack == 0 {
			// Packed only up to the first op of a client with a
			// pack in flight: the ops from there on wait, and go
			// with what their clients write meanwhile. Packed at
			// once, each op written while its client's pack was in
			// flight went alone, a round each.
			end := to
			for end < limit && of[ops[end].id] == 0 {
				end++
			}
			if end == to {
				break
			}
			packOps(ops[to:rollupEnd(ops, to, end)])
		}
		head := &ops[to]
		if of[head.id] > 0 {
			break // after its client's pack in flight is acknowledged
		}
		of[head.id]++
		to += head.pack
	}
	return to
}

// sendEpochs returns the epoch each op of batch is sent at, and which of
// them are stale: of a claim of their id before one by which this node
// took the id from another node again, so that the other node may have
// written ops of a newer epoch after them. A stale rollup must not
// remove those from the stream (a stale op is skipped by readers, a
// rollup's purge is not). A rollup of an earlier claim followed only by
// this node's own claims (a client back on this node while the stream
// had no quorum) keeps its purge: the ops before it are older than the
// session it adopted. Every op of an id another node claimed since this
// node's last claim (lost) is stale: a rollup queued here while the
// partition had no quorum, sent after the newer owner's ops, purged them,
// and the next claim read this node's older state from the stream (a QoS
// 2 exchange completed on the newer owner delivered again: test/jepsen
// TestClusterFull seed 46, session 19 lead). s.mu is held.
func (s *sessions) sendEpochs(batch []repOp) ([]uint64, []bool) {
	epochs := make([]uint64, len(batch))
	stale := make([]bool, len(batch))
	for i, op := range batch {
		epochs[i] = op.epoch
		if op.epoch == 0 && !op.epochSet {
			epochs[i] = s.epochs[op.id]
		}
		_, lost := s.lost[op.id]
		stale[i] = epochs[i] < s.took[op.id] || lost
	}
	return epochs, stale
}

// rollupEnd returns where the ops of ops[to:end] to pack now end: at end,
// or past it to the last op of an adoption that a rollup among them
// begins (the ops of its client with its ticket: the broker appends an
// adopted session whole), which packOps keeps in the rollup's pack. Cut
// at a limit, the rollup went with part of the session: it removed the
// earlier owners' ops, and a node that died before the rest left a record
// without them (test/jepsen TestClusterFull seed 48).
func rollupEnd(ops []repOp, to, end int) int {
	for i := end - 1; i >= to; i-- {
		if r := &ops[i]; r.rollup {
			for end < len(ops) && ops[end].pack == 0 && ops[end].id == r.id && ops[end].ticket == r.ticket {
				end++
			}
			return end
		}
	}
	return end
}

// packOps reorders ops, none packed yet, into packs: each client's ops in
// their order, a pack per client, packs in the order of their first ops.
// A rollup starts a pack of its own (it removes the subject's earlier
// messages, so nothing appended before it may travel with it), and so does
// an op that would take a pack beyond packMax, except the ops appended
// with a rollup (its ticket): the session an adoption writes whole goes
// whole in the rollup's pack, up to rollupMax, so that the stream never
// has the rollup without the rest (its purge took the earlier owners'
// record). Wait stays right: the first op of each pack has the least
// ticket of its pack, and the packs follow in the order of those tickets,
// so while the first op of q.ops is not acknowledged, no op of a later
// ticket counts as replicated.
func packOps(ops []repOp) {
	type pack struct {
		idx  []int
		size int
		// rollup: the pack begins with a rollup appended at ticket.
		rollup bool
		ticket broker.Ticket
	}
	var packs []pack
	open := map[string]int{} // client id -> its last pack
	for i := range ops {
		op := &ops[i]
		p, ok := open[op.id]
		size := len(op.body) + opFrame
		whole := ok && packs[p].rollup && packs[p].ticket == op.ticket && packs[p].size+size <= rollupMax
		if !ok || op.rollup || !whole && packs[p].size+size > packMax {
			packs = append(packs, pack{rollup: op.rollup, ticket: op.ticket})
			p = len(packs) - 1
			open[op.id] = p
		}
		packs[p].idx = append(packs[p].idx, i)
		packs[p].size += size
	}
	out := make([]repOp, 0, len(ops))
	for _, p := range packs {
		for k, i := range p.idx {
			op := ops[i]
			op.pack = -1
			if k == 0 {
				op.pack = len(p.idx)
			}
			out = append(out, op)
		}
	}
	copy(ops, out)
}

// awaitAcks waits until the oldest pack in flight is acknowledged, or
// more ops are appended, and returns how many packs from the oldest on
// are acknowledged by then. An error refused the first pack not counted;
// one that has no acknowledgement within Config.ForwardTimeout is an error
// too, and so is one sent before its partition stream elected a leader
// (errElected).
func (s *sessions) awaitAcks(q *partQueue, inflight []inflightPack) (int, error) {
	timer := time.NewTimer(s.n.cfg.ForwardTimeout - time.Since(inflight[0].at))
	defer timer.Stop()
	select {
	case <-inflight[0].f.Ok():
	case err := <-inflight[0].f.Err():
		return 0, err
	case <-timer.C:
		return 0, fmt.Errorf("no acknowledgement within %v", s.n.cfg.ForwardTimeout)
	case <-q.wake:
		return 0, nil // publish those first, then wait again
	case <-q.elect:
		if inflight[0].at.UnixNano() < q.electedAt.Load() {
			return 0, errElected
		}
		return 0, nil // sent to the new leader: its acknowledgement comes
	case <-s.n.ctx.Done():
		return 0, s.n.ctx.Err()
	}
	done := 1
	for done < len(inflight) && acked(inflight[done].f) {
		done++
	}
	return done, nil
}

// acked reports whether f has its acknowledgement, without waiting.
func acked(f jetstream.PubAckFuture) bool {
	select {
	case <-f.Ok():
		return true
	default:
		return false
	}
}

// acknowledged drops q's first n ops, replicated, and wakes the Waits.
// awaitDrained waits up to d until no op waits for replication (the
// fault ops-late).
func (s *sessions) awaitDrained(d time.Duration) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		s.mu.Lock()
		if s.pending == 0 {
			s.mu.Unlock()
			return
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			return
		}
	}
}

// queued reports whether q has ops waiting.
func (s *sessions) queued(q *partQueue) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(q.ops) > 0
}

func (s *sessions) acknowledged(q *partQueue, n int) {
	s.mu.Lock()
	for i := 0; s.stalled != 0 && i < n; i++ {
		if q.ops[i].late {
			s.stalled = 0 // queue-late's op: the ops after it are confirmed
		}
	}
	s.putAcked.note(q.ops[:n], time.Now(), 2*s.n.cfg.ForwardTimeout)
	clear(q.ops[:n]) // their bodies, for the collector
	q.ops = q.ops[n:]
	s.pending -= n
	s.lastErr = nil
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// recoverAt reads id's session from its partition stream, nil if there
// is none, for a node taking the id over from an owner that did not
// answer, and returns when the stream took the session's last op:
// messages held for a gone node before then reached the session already,
// if it matched them (held.go).
func (s *sessions) recoverAt(ctx context.Context, id string) (*broker.StoredSession, time.Time, error) {
	rec, last, _, _, err := s.recoverEnd(ctx, id)
	return rec, last, err
}

// recoverEnd is recoverAt, and also returns the epoch of the session's
// last op (keptSince) and where its writer's own held subject is to be
// read from (opHeldHeader), if that op says.
func (s *sessions) recoverEnd(ctx context.Context, id string) (*broker.StoredSession, time.Time, uint64, heldBehind, error) {
	var last time.Time
	var behind heldBehind
	s.mu.Lock()
	js := s.js
	s.mu.Unlock()
	if js == nil {
		return nil, last, 0, behind, errNotReady
	}
	if s.n.fault.readsLate(id, s.n.remote.orphans.count.Load()) {
		return nil, last, 0, behind, errors.New("session stream: test fault read-late")
	}
	if s.n.fault.failsRead(id) {
		s.awaitSent(ctx, id)
		return nil, last, 0, behind, errors.New("session stream: test fault no-quorum")
	}
	subj := s.subject(id)
	stream := streamName(s.partition(id))
	// Asked again while unanswered (firstAnswer): one ask sent while
	// the partition's leader was dead held the claim for its whole
	// bound (TestReproForwardOutReheld, session 27: 30 s, its test's
	// forward_timeout, for a read the new leader answered at once).
	info, err := firstAnswer(ctx, func(ctx context.Context) (*jetstream.StreamInfo, error) {
		st, err := js.Stream(ctx, stream)
		if err != nil {
			return nil, err
		}
		return st.Info(ctx, jetstream.WithSubjectFilter(subj))
	})
	if err != nil {
		return nil, last, 0, behind, fmt.Errorf("session stream: %w", err)
	}
	if info.State.Subjects[subj] == 0 {
		return nil, last, 0, behind, nil
	}
	r := newReplay(id)
	err = readAll(ctx, js, stream, jetstream.ConsumerConfig{FilterSubject: subj}, func(m jetstream.Msg) error {
		before := r.applied
		if err := r.applyStored(m); err != nil {
			return fmt.Errorf("session record of %q: %w", id, err)
		}
		if md, err := m.Metadata(); err == nil {
			last = r.lastOp(before, opTime(m, md.Timestamp), last)
		}
		if r.applied > before {
			behind = opHeld(m) // the last op's alone: an older one's place is passed
		}
		return nil
	})
	if err != nil {
		return nil, last, 0, behind, fmt.Errorf("session stream: %w", err)
	}
	if r.skipped > 0 {
		s.n.log.Info("session record: skipped ops of a previous owner written after it lost the id", "client_id", id, "ops", r.skipped)
	}
	r.logPassed(s.n.log)
	return r.session(), last, r.maxEpoch, behind, nil
}

// awaitSent waits until no op of id waits in its partition's queue, within
// ctx and forward_timeout: before a claim reads the stream (takeOverFrom),
// and for the no-quorum test fault (the stream came back).
func (s *sessions) awaitSent(ctx context.Context, id string) {
	ctx, cancel := context.WithTimeout(ctx, s.n.cfg.ForwardTimeout)
	defer cancel()
	q := &s.parts[s.partition(id)]
	for {
		select {
		case q.wake <- struct{}{}:
		default:
		}
		s.mu.Lock()
		queued := slices.ContainsFunc(q.ops, func(op repOp) bool { return op.id == id })
		s.mu.Unlock()
		if !queued {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// A session moved here whose held reads are not done. A reader that takes
// a session from the stream reads the held subjects from its last op on
// (heldahead.go readAhead), as if what was held or kept for it before that
// op was in it then. For a session moved here live with its old owner's
// places (beginHanded) that is not so: this node adopts it, and writes its
// ops, before its followers read from those places, seconds earlier
// (keptBy: from when the old owner was asked to let go). Should this node
// lose the id before those reads are journalled, the next owner read
// the stream from the adoption on and passed over what the old owner's
// copy kept between its answer and the adoption (test/jepsen
// TestClusterFull seed 53, ps3: n3's copy kept pub1#618, pub0#571 and
// #572 at 36.582-36.584, n2 adopted at 36.586 and was fenced at 36.596,
// before its read of n3's subject at 36.608; n1 read from 36.586:
// TestReproHandedReadLate). So until those reads are done, the session's
// ops here are made no later than their earliest place: a reader then
// reads every held subject from where this node still had to, as the
// followers here would have.

// madeCap bounds the made time of an id's ops (opMadeHeader) until until.
type madeCap struct {
	at, until time.Time
}

// capMade has id's ops made no later than at (when not zero), until
// uncapMade or until.
func (s *sessions) capMade(id string, at, until time.Time) {
	if s == nil || at.IsZero() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.madeCaps == nil {
		s.madeCaps = map[string]madeCap{}
	}
	s.madeCaps[id] = madeCap{at: at, until: until}
}

// uncapMade ends capMade's bound for id.
func (s *sessions) uncapMade(id string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	delete(s.madeCaps, id)
	s.mu.Unlock()
}

// uncapMadeAt is uncapMade for the cap capMade set at at only: a later
// adoption of id here has a cap of its own, which an earlier one's end
// must not lift.
func (s *sessions) uncapMadeAt(id string, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.madeCaps[id]; ok && c.at.Equal(at) {
		delete(s.madeCaps, id)
	}
}

// madeAt is when an op of id appended now counts as made; s.mu held.
func (s *sessions) madeAt(id string, now time.Time) time.Time {
	c, ok := s.madeCaps[id]
	switch {
	case !ok:
		return now
	case now.After(c.until):
		delete(s.madeCaps, id) // its reads never ended: bounded as their watch is
		return now
	case c.at.Before(now):
		return c.at
	}
	return now
}

// handedFloor is the earliest time among places (heldPos) read by time
// (their since), with a floor, or read for a keep no move carried
// (keptFrom); zero for none. A place given by a sequence alone has no
// time here (its follower's since is where that follower began, not the
// place).
func handedFloor(places []heldPos) time.Time {
	var at time.Time
	for _, p := range places {
		t := p.floor
		if p.from == 0 {
			t = p.since
		}
		if !p.keptFrom.IsZero() {
			t = minTime(t, p.keptFrom)
		}
		if !t.IsZero() {
			at = minTime(at, t)
		}
	}
	return at
}

// epochOf returns this node's claim epoch of id (sessions.epochs).
func (s *sessions) epochOf(id string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.epochs[id]
}

// lastEpoch returns the epoch of the first op of the last message in
// id's subject (for the test fault land-before-fence).
func (s *sessions) lastEpoch(ctx context.Context, id string) (uint64, error) {
	js, err := s.openJS()
	if err != nil {
		return 0, err
	}
	st, err := js.Stream(ctx, streamName(s.partition(id)))
	if err != nil {
		return 0, err
	}
	m, err := st.GetLastMsgForSubject(ctx, s.subject(id))
	if err != nil {
		return 0, err
	}
	e, ok := firstEpoch(m.Data)
	if !ok {
		return 0, errWire
	}
	return e, nil
}
