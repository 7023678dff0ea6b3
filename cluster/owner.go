package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/topic"
)

// Client-id ownership: one connection per client id in the whole cluster.
//
// The record of who owns an id is a key in a JetStream key-value bucket
// (one stream, Config.Replicas copies, each write synced before it is
// acknowledged), holding the owner node and an epoch. A node accepting a
// CONNECT reads the record and writes itself as owner with the epoch
// incremented, on the condition that the record is still the one it read
// (a compare-and-set on the key's revision); a conflict means another
// connect raced, and it reads again. Then it asks the previous owner, if
// another node, to let go: that node takes the connection over (DISCONNECT
// 0x8E) unless it already holds a newer epoch for the id itself, in which
// case its own claim was later and stands. The newest successful write
// wins, as MQTT wants the newest connection to.

const (
	ownBucket = "ROOST_OWN"
	// ownSubject.<node>: requests to node to let go of a client id.
	ownSubject = subjPrefix + ".own"
	// claimTries bounds compare-and-set retries under contention.
	claimTries = 8
	// releaseTimeout bounds the wait for the previous owner; one that does
	// not answer (dead, paused, cut off) is fenced by the epoch. The
	// previous owner's whole answer has a shorter bound (answerBound).
	releaseTimeout = 3 * time.Second
)

// owners is a node's side of ownership: the bucket and the epochs of the
// ids this node claimed.
type owners struct {
	n  *Node
	mu sync.Mutex
	kv jetstream.KeyValue // nil until the bucket is ready
	// epochs holds the epoch of each id this node claimed lately: it
	// tells a late release request (from a claim older than this node's
	// own) from a current one. Such races last as long as a claim, so
	// entries are dropped after epochTTL; without one, a request always
	// takes over, which is right for a claim made since.
	epochs map[string]epochAt
	// others holds, per id, the newest record naming another node that
	// this node saw lately (the watcher, or fence's reads), for epochTTL:
	// a will of a session taken off here is left to that node without a
	// read of the record, which may not answer for seconds after a heal
	// (ownedElsewhere).
	others map[string]epochAt
	// lostContact is set when this node drops a peer (silent, or its
	// routes closed): it may have been cut off, and the release requests
	// of claims made meanwhile may never arrive. The next peer it hears
	// from again makes it fence its sessions (fence).
	lostContact atomic.Bool
	// stalled is set with lostContact when this node finds it did not
	// run for long enough to have dropped a peer for it (expireLoop):
	// the release requests of claims made meanwhile may have gone
	// unanswered, as for a drop, but no peer is dropped for it
	// (excuseStall) and so none is heard "again": the next peer heard
	// from at all makes it fence.
	stalled atomic.Bool
	// unread: ids whose record names this node (or is being written to)
	// while their session is in the stream only: a claim taking the
	// session over from another node, until it has it, or one that
	// could not read it (the claim was refused). The next claim of the
	// id, here or elsewhere, reads it from there.
	unread map[string]bool
	// overtaken: for an unread id, the epoch of a record naming another
	// node that the watcher saw meanwhile (fenceID): a newer claim came
	// while this one was still taking the session from the stream.
	overtaken map[string]uint64
	// pending: sessions handed over, waiting for the new owner's word
	// (fence.go).
	pending handovers
	// fenced: the epoch of the record that fenced each id's session here
	// and whose fenceGrace timer is still due (fenceID). A claim of the
	// id here, or a release request, takes it off: the session that
	// timer would end is then no longer the fenced one (epochs cannot
	// tell, as a release request deletes the id's epoch).
	fenced map[string]uint64
	// wills: the epoch of each owner record holding a will that this
	// node wrote, by the record's revision, until WillDone rewrites it
	// (cleanwill.go): one entry per connection with a clean session and
	// a will.
	wills map[uint64]uint64
	// dropped: ids whose last connection here ended with its will
	// dropped (a normal DISCONNECT), since when (cleanwill.go).
	dropped map[string]time.Time
	// superseded: revisions of records holding a will of a connection of
	// this node, which a later claim here replaced (cleanwill.go).
	superseded map[uint64]time.Time
	// claiming: ids with a claim under way here, closed when it ends
	// (lockClaim).
	claiming map[string]chan struct{}
	// ending: ids whose session's end here a release request's answer
	// or a fence is deciding, closed when it is decided (lockEnd).
	ending map[string]chan struct{}
	// releasing: ids whose release requests a handler answers now
	// (onRelease), with the requests that came meanwhile, in order.
	releasing releaseQueue
	// releaseSlots holds a token per running handler (releaseHandlers).
	releaseSlots chan struct{}
	// heldPending: sessions the janitor adopted whose held messages it
	// has not applied yet, closed when it has (janitor.go); a release
	// request for one waits for that (heldWaitMax).
	heldPending map[string]chan struct{}
}

type epochAt struct {
	epoch uint64
	at    time.Time
}

// epochTTL is how long a claim's epoch is remembered.
const epochTTL = time.Minute

// sawOther notes a record naming another node as id's owner at epoch.
func (o *owners) sawOther(id string, epoch uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.others == nil {
		o.others = make(map[string]epochAt)
	}
	o.others[id] = epochAt{max(o.others[id].epoch, epoch), time.Now()}
}

// ownedElsewhere reports whether the newest record of id this node knows
// of names another node: one seen lately is newer than this node's own
// claim (if it made one lately; epochs only grow).
func (o *owners) ownedElsewhere(id string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	other, ok := o.others[id]
	return ok && other.epoch > o.epochs[id].epoch
}

// sweep forgets epochs older than epochTTL.
func (o *owners) sweep(now time.Time) {
	o.mu.Lock()
	for id, e := range o.epochs {
		if now.Sub(e.at) > epochTTL {
			delete(o.epochs, id)
		}
	}
	for id, e := range o.others {
		if now.Sub(e.at) > epochTTL {
			delete(o.others, id)
		}
	}
	for rev, at := range o.superseded {
		if now.Sub(at) > epochTTL {
			// A takeover on this node dealt with that will itself
			// (its old connection never ended on its own).
			delete(o.superseded, rev)
			delete(o.wills, rev)
		}
	}
	o.mu.Unlock()
	if o.n != nil && o.n.sess != nil {
		o.n.sess.sweepLost(now.Add(-epochTTL))
	}
}

// errNotReady: the bucket could not be created or opened yet (no quorum).
var errNotReady = errors.New("cluster: ownership records not available yet")

// open creates or opens the ownership bucket.
func (o *owners) open(ctx context.Context, js jetstream.JetStream) error {
	kv, err := createOrUpdateKV(ctx, js, jetstream.KeyValueConfig{
		Bucket: ownBucket, Description: "Roost client-id owners", History: 1,
		Storage: jetstream.FileStorage, Replicas: o.n.cfg.Replicas,
	})
	if err != nil {
		return fmt.Errorf("ownership bucket: %w", err)
	}
	o.mu.Lock()
	first := o.kv == nil
	o.kv = kv
	o.mu.Unlock()
	if first {
		o.n.wg.Add(1)
		go o.watch(kv)
	}
	o.n.log.Info("cluster ownership records ready", "bucket", ownBucket, "replicas", o.n.cfg.Replicas)
	return nil
}

func (o *owners) bucket() jetstream.KeyValue {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.kv
}

// ownerRecord is a key's value: the epoch, then the owner node's name.
func encodeOwner(node string, epoch uint64) []byte {
	return append(binary.AppendUvarint([]byte{wireVersion}, epoch), node...)
}

// ownerWillVersion marks an owner record that also holds the will of a
// connection whose session ends with it (cleanwill.go): the epoch, the
// node's name as a string, then the will as a message (handover.go).
const ownerWillVersion = wireVersion + 1

// encodeOwnerWill is encodeOwner with will; a nil will gives encodeOwner's
// bytes.
func encodeOwnerWill(node string, epoch uint64, will *broker.Message) ([]byte, error) {
	if will == nil {
		return encodeOwner(node, epoch), nil
	}
	b := appendString(binary.AppendUvarint([]byte{ownerWillVersion}, epoch), node)
	return appendMessage(b, will, "")
}

func decodeOwner(b []byte) (node string, epoch uint64, err error) {
	node, epoch, _, err = decodeOwnerWill(b)
	return node, epoch, err
}

// decodeOwnerWill decodes either form of an owner record; will is nil for
// a record without one.
func decodeOwnerWill(b []byte) (node string, epoch uint64, will *broker.Message, err error) {
	r := reader{b: b}
	v := r.byte()
	if v != wireVersion && v != ownerWillVersion {
		return "", 0, nil, errWire
	}
	epoch = r.uvarint()
	if v == wireVersion {
		if r.err != nil {
			return "", 0, nil, errWire
		}
		return string(r.b), epoch, nil, nil
	}
	node = r.string()
	will = readMessage(&r)
	if r.err != nil {
		return "", 0, nil, errWire
	}
	return node, epoch, will, nil
}

// ownerKey makes a KV key of a client id. Keys allow only
// [-/_=.A-Za-z0-9]; other bytes, and '.', '/' and '=' which have meanings
// there, become "=XX". Distinct ids give distinct keys.
func ownerKey(id string) string {
	b := make([]byte, 0, len(id)+4)
	b = append(b, "c."...)
	for i := 0; i < len(id); i++ {
		c := id[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' {
			b = append(b, c)
			continue
		}
		b = append(b, '=', hexDigits[c>>4], hexDigits[c&15])
	}
	if len(id) == 0 {
		b = append(b, '=')
	}
	return string(b)
}

// claim records this node as id's owner and has the previous owner let go.
// gone, if not nil, is asked once the wait for another claim of id here is
// over (ClaimUnless).
func (o *owners) claim(ctx context.Context, id string, gone func() bool) error {
	_, _, err := o.claimWill(ctx, id, nil, gone)
	return err
}

// claimWill is claim, with will (if not nil) kept in the record it writes
// (cleanwill.go). It returns the revision and epoch of the record it
// wrote, also with an error that came after the write; 0 when it wrote
// nothing, or does not know (a write not confirmed).
func (o *owners) claimWill(ctx context.Context, id string, will *broker.Message, gone func() bool) (written, epoch uint64, err error) {
	kv := o.bucket()
	if kv == nil {
		return 0, 0, errNotReady
	}
	waits := o.claimRunning(id)
	if waits {
		o.n.log.Debug("cluster: a claim waits for another claim of the same client id here", "client_id", id)
	}
	// One claim of an id at a time on this node: a record naming this
	// node at the epoch this claim wrote is then known to be this
	// claim's (below), not a concurrent CONNECT's.
	unlock, err := o.lockClaim(ctx, id)
	if err != nil {
		return 0, 0, fmt.Errorf("cluster: owner of %q: another connect of this client id is being recorded here: %w", id, err)
	}
	defer unlock()
	// A dropped copy's record kept here goes before the owner record
	// names this node: a restart after the write took it for this
	// node's session (spared.go).
	o.n.sess.unspare(id)
	// The claim before may have run for seconds (a live move in that
	// waits for its finish), longer than a client waits for its CONNACK:
	// made for a CONNECT whose client gave up meanwhile, this claim took
	// the session from the claim of the client's next CONNECT elsewhere,
	// and, as the copy here was still live, read the stream while that
	// copy took messages, then replaced the copy with what it read
	// (test/jepsen TestClusterFull short faults, seed 196: g0 lost
	// pub1#76-#80; TestReproQueuedClaimGone).
	if waits && gone != nil && gone() {
		o.n.log.Debug("cluster: claim not made: the CONNECT's client closed its connection while another claim of the id here ran", "client_id", id)
		return 0, 0, fmt.Errorf("cluster: claim for %q: %w", id, broker.ErrClientGone)
	}
	key := ownerKey(id)
	// tried is the write last reported as a conflict. Such a report can
	// be wrong: a stream leader that was paused or cut off and has not yet
	// heard of the newer term checks the write's expected revision against
	// its own old state and refuses at once, while the current leader
	// applies the write and answers after it; the writer takes the first
	// answer (TestReproClaimAfterRestart: every later read then showed
	// this node as the owner, and the CONNECT that came next started the
	// client afresh on a session the cluster had).
	var tried struct {
		epoch     uint64
		prev      string
		prevWill  *broker.Message
		prevRev   uint64
		wasUnread bool
		inherited bool
	}
	for range claimTries {
		var prev string
		var rev uint64
		var prevWill *broker.Message
		prev, epoch, prevWill, rev, err = o.readWill(ctx, key)
		if err != nil {
			return 0, 0, err
		}
		if tried.epoch != 0 && prev == o.n.cfg.Node && epoch == tried.epoch {
			o.n.log.Debug("cluster: an owner record write reported as a conflict was applied", "client_id", id, "epoch", epoch)
			if tried.inherited {
				o.publishInheritedWill(id, tried.prevWill)
			} else if tried.prev == o.n.cfg.Node && tried.prevWill != nil {
				o.supersede(tried.prevRev)
			}
			return o.claimed(ctx, id, rev, epoch, tried.prev, tried.prevWill, tried.wasUnread)
		}
		// A record naming this node that this process did not write,
		// with no session here: a claim of its previous incarnation,
		// killed after the previous owner let go and before the
		// session was here (its store never had it). Taken as "mine",
		// the session in the stream was never read and the client
		// started afresh (test/jepsen TestClusterFull b41r3: g1m1,
		// killed 0.1 s after its claim was answered). Known before
		// this claim notes its own epoch. A record holding the will of
		// a connection of this process is this process's, whatever the
		// epochs say (they are forgotten after epochTTL): its WillDone
		// publishes that will (supersede).
		inherited := prev == o.n.cfg.Node && !o.wroteWill(rev) && o.leftover(id, epoch)
		epoch++
		// The epoch is noted before the write: a release request for
		// an older epoch arriving meanwhile must not take the new
		// connection down.
		o.noteEpoch(id, epoch)
		elsewhere := prev != "" && prev != o.n.cfg.Node
		wasUnread := o.isUnread(id) || inherited && o.n.sess != nil
		// From the write until the session is here, this node holds the
		// id's record but not its session: a later claim's request to
		// let go must be told to read the session from the stream, not
		// that there is nothing to hand over (it would start the
		// client afresh on a session that exists). It stays so after a
		// failed write too: one reported as refused may have been
		// applied (tried).
		if (elsewhere || inherited) && o.n.sess != nil {
			o.setUnread(id, true)
		}
		val, err := encodeOwnerWill(o.n.cfg.Node, epoch, will)
		if err != nil {
			return 0, 0, fmt.Errorf("cluster: will of %q: %w", id, err)
		}
		if prev == o.n.cfg.Node && prevWill != nil && !inherited {
			o.supersede(rev)
		}
		if rev == 0 {
			written, err = kv.Create(ctx, key, val)
		} else {
			written, err = kv.Update(ctx, key, val, rev)
		}
		if err == nil && o.n.fault.unconfirmsConnect(id) {
			err = errFaultConnectUnconfirmed
		}
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			o.unsupersede(rev)
			tried.epoch, tried.prev, tried.prevWill, tried.prevRev, tried.wasUnread = epoch, prev, prevWill, rev, wasUnread
			tried.inherited = inherited
			continue // another connect raced, or so a stale leader says: read again
		}
		if err != nil {
			if prev != "" && prev != o.n.cfg.Node {
				// Not refused, only not confirmed (a timeout): the
				// write may have been applied, and the next claim
				// then reads this node as the owner while the session
				// is still another's, whom the record no longer
				// names. It reads the session from the stream.
				o.mu.Lock()
				o.unread[id] = true
				o.mu.Unlock()
			}
			// epoch too: the write may have been applied, with will
			// (ClaimWill clears it).
			return 0, epoch, fmt.Errorf("cluster: recording owner of %q: %w", id, err)
		}
		if inherited {
			o.publishInheritedWill(id, prevWill)
		}
		return o.claimed(ctx, id, written, epoch, prev, prevWill, wasUnread)
	}
	return 0, 0, fmt.Errorf("cluster: owner of %q: %d conflicting connects in a row", id, claimTries)
}

// claimed finishes a claim whose record (revision written, epoch) names
// this node now, replacing prev's (with prevWill): the previous owner lets
// go and the session comes here. A record this node's previous
// incarnation wrote (inherited) counts as unread (wasUnread); the will it
// holds was published by the claim (publishInheritedWill).
func (o *owners) claimed(ctx context.Context, id string, written, epoch uint64, prev string, prevWill *broker.Message, wasUnread bool) (uint64, uint64, error) {
	if o.n.sess != nil {
		o.n.sess.setEpoch(id, epoch, prev != o.n.cfg.Node || wasUnread)
	}
	o.n.mv.endOutBefore(id, epoch)
	if prev != "" && prev != o.n.cfg.Node {
		o.n.log.Info("client id claimed from another node", "client_id", id, "previous", prev, "epoch", epoch)
		return written, epoch, o.standing(id, epoch, o.takeOver(ctx, prev, id, epoch, prevWill))
	}
	if prev == o.n.cfg.Node && wasUnread {
		return written, epoch, o.standing(id, epoch, o.takeOver(ctx, "", id, epoch, nil))
	}
	return written, epoch, nil
}

// standing is the outcome of a takeover that ended with err for the
// claim of id at epoch: errSuperseded, not success, once a newer claim
// took the id meanwhile (stands). A takeover can outlast such a claim
// after its session is in the server: a live move waits for its
// adoption's ops to be durable (seconds under load), and a newer claim's
// release request that came meanwhile was handed the adopted session
// (awaitIn waits only for moves not adopted yet). Answered as if it
// stood, the older CONNECT found no session and its client started
// afresh, Session Present 0, on a copy nobody owned, which took its
// node's share group messages as a disowned copy kept alive by the
// fences of each later claim (test/jepsen TestClusterFull seed 847: n2's
// claim of g0m0 at epoch 5 overtaken by n1's epoch 6, 25 acknowledged g0
// messages lost; TestReproMoveInHandedAway). Refused without CONNACK,
// the client connects again and its next claim takes the session from
// the newer owner.
func (o *owners) standing(id string, epoch uint64, err error) error {
	if err != nil || o.stands(id, epoch) {
		return err
	}
	o.n.log.Info("cluster: claim superseded while it took the session over; refusing the connection",
		"client_id", id, "epoch", epoch)
	return fmt.Errorf("cluster: %w", errSuperseded)
}

// stands reports whether this node's claim of id at epoch still holds
// the id: no release request of a newer claim was answered here since
// (handleRelease forgets the epoch, as beginAdopt checks) and no record
// of a newer claim was seen (sawOther: the owner watcher, a fence's
// read, a release request). A claim that outlasted epochTTL (its epoch
// swept) does not stand either: its client connects again.
func (o *owners) stands(id string, epoch uint64) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.epochs[id].epoch == epoch && o.others[id].epoch <= epoch
}

// wroteWill reports whether the record at revision rev holds the will of
// a connection of this process (cleanwill.go).
func (o *owners) wroteWill(rev uint64) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	_, ok := o.wills[rev]
	return ok
}

// claimRunning reports whether a claim of id runs on this node now.
func (o *owners) claimRunning(id string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	_, ok := o.claiming[id]
	return ok
}

// lockClaim waits until no other claim of id runs on this node, then
// holds that until the returned func is called.
func (o *owners) lockClaim(ctx context.Context, id string) (func(), error) {
	return o.lockID(ctx, &o.claiming, id)
}

// lockID waits until locks holds no entry for id, then holds one until
// the returned func is called; ctx ends the wait.
func (o *owners) lockID(ctx context.Context, locks *map[string]chan struct{}, id string) (func(), error) {
	for {
		o.mu.Lock()
		busy, ok := (*locks)[id]
		if !ok {
			done := make(chan struct{})
			if *locks == nil {
				*locks = make(map[string]chan struct{})
			}
			(*locks)[id] = done
			o.mu.Unlock()
			return func() {
				o.mu.Lock()
				delete(*locks, id)
				o.mu.Unlock()
				close(done)
			}, nil
		}
		o.mu.Unlock()
		select {
		case <-busy:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// takeOver has prev, id's owner before this node's claim at epoch, let go,
// and adopts the session it hands over. A previous owner that does not
// answer (killed, paused, cut off) leaves the session to be read from its
// partition stream (sessions.go); an error there refuses the CONNECT (the
// client tries again) rather than start afresh on a session that exists.
//
// prevWill, the will prev's record held, is published once prev answered
// (publishReplacedWill): before the session is taken, which can take
// seconds (held reads), since a kill of this node meanwhile left that will
// to nobody (prev's connection was taken over without it).
func (o *owners) takeOver(ctx context.Context, prev, id string, epoch uint64, prevWill *broker.Message) error {
	var rec *broker.StoredSession
	var handed []heldPos
	answered := false
	// Before the request: prev disowns its copy when it answers.
	asked := time.Now()
	if prev != "" {
		var dropped, superseded bool
		rec, answered, dropped, superseded, handed = o.release(ctx, prev, id, epoch)
		o.publishReplacedWill(id, prev, prevWill, dropped)
		if superseded {
			// The id's unread mark stays: this node holds no session
			// for it, and the newer claim's request, when it comes
			// here, must be told to read the stream.
			return fmt.Errorf("cluster: %w", errSuperseded)
		}
	}
	return o.takeOverFrom(ctx, prev, id, epoch, rec, answered, handed, asked)
}

// takeOverFrom adopts id's session as prev's answer left it: rec handed
// over (answered), with handed, where the held subjects are to be read on
// from for it (cutPositions), or from the stream. asked is when prev was
// asked to let go.
func (o *owners) takeOverFrom(ctx context.Context, prev, id string, epoch uint64, rec *broker.StoredSession, answered bool, handed []heldPos, asked time.Time) error {
	if o.n.fault.stallsAdoption(id) {
		o.n.log.Warn("cluster: test fault: the claim stalls before it takes the session", "client_id", id,
			"answered", answered, "handed_over", rec != nil)
		select {
		case <-o.n.ctx.Done():
		case <-time.After(adoptStallMax):
		}
	}
	if answered && rec != nil {
		// The previous owner is alive and still holds the session:
		// move it with a cut per node (handover_live.go). The move
		// takes the id's unread mark once it is registered (moveIn):
		// a later claim that took the mark first was told to read the
		// stream, and that connection is the newer one [MQTT-3.1.4-3].
		return o.n.mv.moveIn(ctx, prev, id, epoch, rec, handed, asked)
	}
	from := prev
	var last time.Time
	var lastEpoch uint64
	var behind heldBehind
	if !answered && o.n.sess != nil {
		// This node's own ops of the id still queued (written before
		// it lost the id, the stream without a quorum for it) land
		// before the read: read after, the adoption's rollup would
		// purge them unread (keep.go, keptSince).
		// This node's hold keys of id already out (a fence's, an
		// earlier claim's) stay while the read goes on and cover after
		// it (claimhold.go claimReading).
		reading := o.n.sess.claimReading(id)
		o.n.sess.awaitSent(ctx, id)
		var err error
		rec, last, lastEpoch, behind, err = o.n.sess.recoverEnd(ctx, id)
		if reading {
			o.n.sess.claimReadEnd(id, err)
		}
		if err != nil {
			// The id stays unread: the next claim reads the stream.
			return fmt.Errorf("cluster: reading the session of %q: %w", id, err)
		}
		for _, l := range o.n.fault.releaseAdoptOps(id) {
			o.n.sess.sendLate(&l.op, l.mark)
		}
		from = "replicated record"
	}
	if !answered && o.n.sess != nil && rec != nil {
		return o.takeFromStream(id, epoch, rec, last, lastEpoch, behind, prev)
	}
	// A later claim that asked this node to let go meanwhile was told to
	// read the stream (onRelease took the mark): that connection is the
	// newer one [MQTT-3.1.4-3], this one must not adopt a second copy.
	if o.n.sess != nil && !o.takeUnread(id) {
		return fmt.Errorf("cluster: %w", errSuperseded)
	}
	if rec == nil {
		o.resumeHere(id, epoch)
		return nil
	}
	if o.n.sess != nil {
		o.n.sess.adopt(id)
	}
	holdWill(rec, o.n.cfg.ForwardTimeout)
	o.n.srv.Adopt(rec)
	if answered {
		o.confirm(prev, id, epoch)
	}
	o.n.log.Info("session moved here", "client_id", id, "from", from,
		"subscriptions", len(rec.Subs), "messages", len(rec.Queue))
	return nil
}

// resumeHere makes the session this node still has for id, if any, that
// of its claim at epoch, to which nothing was handed over and the stream
// gave none: the client resumes it. Such a session is a copy this node
// handed over to an older claim (or that a fence took off for one) and
// that nobody took: the older claim's node answered "nothing to hand
// over" (its adoption outlasted the answer's bound; before the cut,
// whenever its move waited), or the claimer read no record. It is
// adopted anew, as a handed-over session is. Resumed as it was, it was
// still the old handover's: that handover's end (the older claim's
// confirmation, or liveConfirmTimeout without one) ended it once its
// client had gone again, and this node then owned the record with no
// session and no unread mark, so the next claim was told "nothing to
// hand over" and started the client afresh (test/jepsen TestClusterFull,
// 30 minutes, seed 42: g1m0, its CONNACK on the claim back refused, the
// copy ended 15 s after the handover; TestReproResumedCopyKept). Adopted
// anew, it is also journalled whole (its ops since the disown stayed
// here), and routed again if a move's finish had taken it off the tree.
func (o *owners) resumeHere(id string, epoch uint64) {
	o.pending.dropBefore(id, epoch)
	n := o.n
	// Under the gate, as any adoption: a message delivered between the
	// export and the adoption would reach the old copy only.
	n.gate.Lock()
	defer n.gate.Unlock()
	rec := n.srv.Export(id)
	if rec == nil {
		return
	}
	// The old copy's end takes its filters off the tree before the new
	// one puts them back: counted up meanwhile, this node's interest in
	// them never drops (as a live move's does not, moveIn), so no other
	// node stops forwarding them in between.
	var keys []ikey
	for _, sub := range rec.Subs {
		if group, plain, _, err := topic.ParseShare(sub.Filter); err == nil {
			keys = append(keys, ikey{plain, group})
			n.local.add(ikey{plain, group})
		}
	}
	if n.sess != nil {
		n.sess.readopt(id)
	}
	holdWill(rec, n.cfg.ForwardTimeout)
	n.srv.Adopt(rec)
	for _, k := range keys {
		n.local.remove(k)
	}
	n.log.Info("cluster: nothing handed over; the copy here resumed, adopted anew", "client_id", id, "epoch", epoch,
		"subscriptions", len(rec.Subs), "messages", len(rec.Queue))
}

// takeFromStream adopts rec, id's session read from its partition stream
// (its last op written at last, at lastEpoch, saying behind) for a
// connecting client whose claim here is at epoch, with what was
// held for it (adoptHeld). The id stays unread (owners.unread) until the
// session is in the server: a later claim's release request that comes
// while the held subjects are read ahead (seconds under load) is told to
// read the stream itself, and this claim is superseded. Taken before the
// reads, the mark let that request find no session here and no mark:
// "nothing to hand over", and the newer connection started afresh
// (TestClusterTransports/NodeKill: mqtt.js got Session Present 0 and 141
// acknowledged messages never came).
func (o *owners) takeFromStream(id string, epoch uint64, rec *broker.StoredSession, last time.Time, lastEpoch uint64, behind heldBehind, prev string) error {
	// Held for this node until the session is adopted here, or for a
	// while after a newer claim superseded this one (claimhold.go).
	o.n.sess.claimHold(id, rec.Subs)
	holdWill(rec, o.n.cfg.ForwardTimeout)
	o.n.claimQueued(o.n.ctx, rec)
	// What publishers held for prev's sessions meanwhile, with a bound
	// of its own: the claim's may be spent by now (the stream read
	// above, under load), and reads that fail at once leave it all to
	// the followers, after the release requests' bound (seen: 93
	// acknowledged messages lost). Read before the session is in the
	// server, delivered with its adoption: newer messages forwarded here
	// must not overtake them (heldahead.go).
	if o.n.fault.overtakes(id) {
		o.n.log.Warn("cluster: test fault: the adoption waits for a newer record", "client_id", id)
		o.n.fault.awaitRecord(id)
	}
	hctx, cancel := context.WithTimeout(o.n.ctx, o.n.cfg.ForwardTimeout)
	defer cancel()
	adopted := o.n.sess.adoptHeld(hctx, rec, last, lastEpoch, behind, func() *heldWait { return o.beginAdopt(id, epoch) }, prev)
	o.n.sess.claimHoldEnd(id, adopted)
	if !adopted {
		return fmt.Errorf("cluster: %w", errSuperseded)
	}
	o.n.log.Info("session moved here", "client_id", id, "from", "replicated record",
		"subscriptions", len(rec.Subs), "messages", len(rec.Queue))
	return nil
}

// beginAdopt takes id's unread mark for an adoption about to put the
// session in the server; nil if a release request took it first (this
// claim is superseded). From then until what was held reached the
// session (the returned wait, finished by the adoption's reads and its
// followers'), a release request waits (awaitHeld): handed over before,
// the session would leave without it, the new node not reading it (this
// node answers) and the followers here applying it to no session. Seen:
// a CONNECT whose claim outlasted the client's CONNACK timeout, its
// first held reads cut by the claim's bound, handed over to the client's
// next CONNECT elsewhere meanwhile: 107 acknowledged messages lost
// (TestClusterTransports/NodeKill). Both under o.mu: a release request
// that finds no mark finds the wait.
//
// The mark alone does not say the claim stands: a fence here of an older
// copy of id, for the newer claim whose release request took the mark,
// sets it again (endedUnread: that request may still come, as far as the
// fence knows), and the superseded claim then adopted the session beside
// the newer owner's, a share group member with no client and a lost
// epoch, which took this node's publishes for the group (test/jepsen
// TestClusterFull seed 591: n2's claim of g1m0 at epoch 9, answered to
// n1's epoch 10 at 27.151, its old copy fenced at 28.406, adopted at
// 28.802; g1 lost the 20 messages n2 routed meanwhile: 17 published
// there, 3 resends of messages first sent to n1). So the claim's epoch must
// still be this node's for id (a release request's answer forgets it,
// handleRelease), as the janitor's claims check (beginAdoptAll).
func (o *owners) beginAdopt(id string, epoch uint64) *heldWait {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.unread[id] || o.epochs[id].epoch != epoch {
		return nil
	}
	newer := o.overtaken[id] > o.epochs[id].epoch
	delete(o.overtaken, id)
	if newer {
		// The watcher saw the newer claim's record before the session
		// was here, so it had nothing to fence, and that claim's
		// request may come seconds later (queued behind others' held
		// waits): adopted now, the session would serve its client on
		// this older claim meanwhile, its ops at an epoch readers skip
		// once the newer owner wrote (TestClusterFull seed 41 run at
		// 06:21: pub0 on n1 for 5 s at epoch 7 with the record at n3's
		// 8). The mark stays: that request is told to read the stream.
		return nil
	}
	delete(o.unread, id)
	return newHeldWait(o.holdReleaseLocked([]string{id}))
}

// disown stops replicating the ops of id's session here: another node
// claimed it. Only for a session this node has (the watcher sees every
// id's record).
func (o *owners) disown(id string) {
	if o.n.sess != nil && o.n.srv.HasSession(id) {
		o.n.sess.disown(id)
		if d := o.n.fault.takeoverLate(id); d > 0 {
			o.n.log.Warn("cluster: test fault: the connection of a session disowned here is taken over late", "client_id", id, "for", d)
			time.Sleep(d)
		}
	}
}

// errSuperseded: the client id was claimed on another node while this
// node's claim was still taking the session over.
var errSuperseded = errors.New("client id claimed again elsewhere while its session was being taken over")

func (o *owners) isUnread(id string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.unread[id]
}

func (o *owners) setUnread(id string, u bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if u {
		o.unread[id] = true
	} else {
		delete(o.unread, id)
	}
}

// takeUnread reports whether id's session was left unread here (see
// owners.unread), forgetting it.
func (o *owners) takeUnread(id string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	u := o.unread[id]
	delete(o.unread, id)
	delete(o.overtaken, id)
	return u
}

// read returns id's current owner, epoch and the record's revision (0 when
// there is none).
func (o *owners) read(ctx context.Context, _ jetstream.KeyValue, key string) (string, uint64, uint64, error) {
	node, epoch, _, rev, err := o.readWill(ctx, key)
	return node, epoch, rev, err
}

// readWill is read, with the will the record holds (cleanwill.go), if any.
//
// A get is asked again every followAttempt while none answered, the
// earlier ones still waiting (firstAnswer): one sent while the bucket's leader
// was dead, or not elected yet, is answered by nobody, and alone it held
// the claim for its whole bound (a node's death: a claim 3 s after it
// waited 30 s, its test's forward_timeout, for its first read, and read
// the record only at its next CONNECT: TestReproForwardOutReheld missed
// its path so, session 27).
func (o *owners) readWill(ctx context.Context, key string) (node string, epoch uint64, will *broker.Message, rev uint64, err error) {
	type got struct {
		val []byte
		rev uint64
	}
	g, err := firstAnswer(ctx, func(ctx context.Context) (got, error) {
		val, rev, err := leaderGet(ctx, o.n.eng.nc, "KV_"+ownBucket, "$KV."+ownBucket+"."+key)
		return got{val, rev}, err
	})
	if err != nil {
		return "", 0, nil, 0, fmt.Errorf("cluster: reading owner: %w", err)
	}
	val, rev := g.val, g.rev
	if rev == 0 {
		return "", 0, nil, 0, nil
	}
	node, epoch, will, err = decodeOwnerWill(val)
	if err != nil {
		return "", 0, nil, 0, fmt.Errorf("cluster: owner record of %s: %w", key, err)
	}
	return node, epoch, will, rev, nil
}

// claimedHere reports whether this node knows an epoch of its own for id:
// it claimed id since it started, or restored its session.
func (o *owners) claimedHere(id string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.epochs[id].epoch != 0
}

func (o *owners) noteEpoch(id string, epoch uint64) {
	o.mu.Lock()
	o.epochs[id] = epochAt{max(o.epochs[id].epoch, epoch), time.Now()}
	delete(o.fenced, id) // the session is this node's again
	o.mu.Unlock()
}

// release asks node to let go of id, now owned here at epoch, and returns
// the persistent session it hands over, if any. A node that does not answer
// in time is not waited for: it fences itself when it sees the new record
// (fence.go).
// dropped reports that node said the will of its last connection for id
// was dropped (a reply's third byte; cleanwill.go); superseded, that node
// knows of a newer claim of id (reply 3): this claim must not go on.
func (o *owners) release(ctx context.Context, node, id string, epoch uint64) (rec *broker.StoredSession, answered, dropped, superseded bool, handed []heldPos) {
	if o.n.fault.delays(id) {
		select {
		case <-ctx.Done():
		case <-time.After(releaseDelay):
		}
	}
	ctx, cancel := context.WithTimeout(ctx, releaseTimeout)
	defer cancel()
	req := encodeOwnerClaim(epoch, id)
	reply, err := o.n.eng.nc.RequestWithContext(ctx, ownSubject+"."+node, req)
	if err != nil {
		if !errors.Is(err, nats.ErrNoResponders) {
			o.n.log.Warn("cluster: previous owner did not confirm the takeover", "client_id", id, "peer", node, "err", err)
		}
		return nil, false, false, false, nil
	}
	if len(reply.Data) < 2 || reply.Data[0] != wireVersion {
		return nil, true, false, false, nil
	}
	// After 0 or 2: a byte saying the will was dropped (1) or not (0),
	// then, from a restarted node that gave up a restored session before
	// it had settled (reply 2), where its held subject is to be read from
	// (held.go, takeUnsettled).
	dropped = len(reply.Data) >= 3 && reply.Data[1] != 1 && reply.Data[2] == 1
	switch reply.Data[1] {
	case 0:
		return nil, true, dropped, false, nil
	case 2:
		if len(reply.Data) > 3 && o.n.sess != nil {
			if from, n := binary.Uvarint(reply.Data[3:]); n > 0 {
				o.n.sess.heldFrom(node, id, from)
			}
		}
		return nil, false, dropped, false, nil // the session is in the stream only
	case 3:
		o.n.log.Info("cluster: claim superseded: the previous owner knows of a newer claim; refusing the connection",
			"client_id", id, "peer", node, "epoch", epoch)
		return nil, true, false, true, nil
	}
	rec, err = decodeSession(id, reply.Data[2:])
	if err != nil {
		o.n.log.Error("cluster: handed-over session unreadable", "client_id", id, "peer", node, "err", err)
		return nil, false, false, false, nil // read from the stream instead, when replicated
	}
	// Where the held subjects are to be read on from, if the previous
	// owner's held reads for the session were not done (cutPositions).
	if handed, err = decodeHeldPos(reply.Header.Get(heldPosHeader)); err != nil {
		o.n.log.Error("cluster: held places of a handed-over session unreadable", "client_id", id, "peer", node, "err", err)
	} else if err = decodeHeldPosCopy(handed, reply.Header.Get(heldPosCopyHeader)); err != nil {
		// Read as an older node's: its kept messages are read again
		// (left out as ones the session holds).
		o.n.log.Error("cluster: held places' copy marks of a handed-over session unreadable", "client_id", id, "peer", node, "err", err)
	}
	return rec, true, false, false, handed
}

// onRelease takes a release request (another node's claim of an id this
// node may hold) off the node's subscription and has it answered
// (handleRelease) by a handler of its id: requests for different ids are
// answered side by side, those for one id one after the other, in the
// order they came. One at a time for all ids (the subscription's own
// callback), a request queued behind another's held wait (up to
// heldWaitMax) and was answered after its claimer's releaseTimeout: the
// claimer had read the stream while the copy here still took messages
// (TestReproReleaseSideBySide). At most releaseHandlers ids are handled at
// once; beyond that, the subscription waits for a handler to end, as it
// waited for each request before.
func (o *owners) onRelease(m *nats.Msg) {
	req := releaseReq{m: m, at: time.Now()}
	_, id, err := decodeOwnerClaim(m.Data)
	if err != nil {
		o.n.log.Warn("cluster: bad release request")
		return
	}
	if leave, first := o.n.fault.leavesClaim(id); leave {
		o.n.log.Info("cluster: test fault: a release request left unanswered", "client_id", id)
		if first {
			// The request came before the watcher's record: the
			// claimer is the record's owner.
			epoch, _, _ := decodeOwnerClaim(m.Data)
			o.n.goTracked(func() {
				ctx, cancel := context.WithTimeout(o.n.ctx, landFirstMax)
				node, _, _, _ := o.read(ctx, nil, ownerKey(id))
				cancel()
				o.landThenFence(id, node, epoch)
			})
		}
		return
	}
	if !o.releasing.add(id, req) {
		return // queued behind the request its handler answers now
	}
	select {
	case o.releaseSlots <- struct{}{}:
	case <-o.n.ctx.Done():
		o.releasing.drop(id)
		return
	}
	if !o.n.goTracked(func() { o.releaseLoop(id, req) }) {
		<-o.releaseSlots
		o.releasing.drop(id)
	}
}

// releaseHandlers bounds the release requests a node answers at once (one
// goroutine each, for their ids): a claim storm (thousands of sessions
// adopted elsewhere at once) queues on the subscription beyond it. Most
// of an answer is waiting (held messages, a move, a client's last
// packets), so the bound is far above the cores.
const releaseHandlers = 256

// releaseReq is a release request and when it came off the subscription,
// from which its answer's bounds count (answerBound).
type releaseReq struct {
	m  *nats.Msg
	at time.Time
}

// releaseLoop answers req, then the requests for id that came meanwhile,
// in order, and ends when none is left. Run by goTracked, holding a slot
// of releaseSlots.
func (o *owners) releaseLoop(id string, req releaseReq) {
	defer func() { <-o.releaseSlots }()
	for ok := true; ok; req, ok = o.releasing.next(id) {
		if o.n.ctx.Err() != nil {
			o.releasing.drop(id) // the node closes: the rest goes unanswered
			return
		}
		o.handleRelease(req)
	}
}

// releaseQueue holds, per client id, the release requests that came
// while a handler answers one for that id: the handler takes them in
// order (next). Its lock is a leaf: taken under no other.
type releaseQueue struct {
	mu      sync.Mutex
	waiting map[string][]releaseReq // an entry: a handler runs for the id
}

// add notes req for id. It reports whether no handler runs for id: the
// caller is then to start one with req; otherwise req waits for next.
func (q *releaseQueue) add(id string, req releaseReq) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if waiting, ok := q.waiting[id]; ok {
		q.waiting[id] = append(waiting, req)
		return false
	}
	if q.waiting == nil {
		q.waiting = make(map[string][]releaseReq)
	}
	q.waiting[id] = nil
	return true
}

// next returns id's oldest waiting request for its handler; false when
// none waits: the handler ends, and the next add for id starts one.
func (q *releaseQueue) next(id string) (releaseReq, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	waiting := q.waiting[id]
	if len(waiting) == 0 {
		delete(q.waiting, id)
		return releaseReq{}, false
	}
	q.waiting[id] = waiting[1:]
	return waiting[0], true
}

// drop forgets id and its waiting requests: its handler did not start or
// stops (the node closes).
func (q *releaseQueue) drop(id string) {
	q.mu.Lock()
	delete(q.waiting, id)
	q.mu.Unlock()
}

// goTracked runs f in a goroutine that Close waits for, unless Close has
// begun (then it reports false and f does not run). It shares the guard
// of the sender goroutines (batch.go): no wg.Add once Close waits.
func (n *Node) goTracked(f func()) bool {
	n.sendersMu.Lock()
	defer n.sendersMu.Unlock()
	if n.sendersClosed {
		return false
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
	return true
}

// answerBound bounds a release request's whole answer, counted from when
// the request came off the subscription: its waits (heldWaitMax), then
// the handover with the wait for a connected client's last packets
// (broker.Server.HandOverBy: settleTimeout, cut to what is left). The
// rest of the claimer's releaseTimeout is for the request's and the
// reply's way. Before, that wait had its own 2 s after the waits' 2 s, and
// an answer could come 4 s after the request, past releaseTimeout.
const answerBound = releaseTimeout - 500*time.Millisecond

// handleRelease answers a release request. The reply is the version, then
// 0 (nothing to hand over), 1 (the session follows, handover.go) or 2
// (this node holds the id's record but not its session: read it from the
// stream); after 0 or 2, a third byte 1 says
// that the will of the id's last connection here was dropped (a normal
// DISCONNECT) while the record may still hold it (cleanwill.go), and a
// uvarint after that byte where the claimer is to read this node's held
// subject from (held.go, takeUnsettled).
func (o *owners) handleRelease(req releaseReq) {
	m := req.m
	epoch, id, _ := decodeOwnerClaim(m.Data) // decoded once already (onRelease)
	o.n.fault.askedRelease(id)
	if o.n.fault.handlesLate(id) {
		// The request's way was slow, not its queue: its bounds
		// count from here.
		o.n.log.Warn("cluster: test fault: a release request handled late", "client_id", id, "after", heldWaitMax)
		time.Sleep(heldWaitMax)
		req.at = time.Now()
	}
	// One bound for every wait of this answer (heldWaitMax), one for
	// the whole answer (answerBound).
	by := req.at.Add(heldWaitMax)
	o.awaitHeld(id, by)
	o.mu.Lock()
	mine := o.epochs[id].epoch
	newer := mine > epoch
	if !newer {
		delete(o.epochs, id)
		// The handover below (pending, confirm) decides the end of
		// the session here, not a fence's timer.
		delete(o.fenced, id)
	}
	o.mu.Unlock()
	if !newer {
		// The request is a record of the claim (written before it was
		// sent): the will of the connection this answer ends is the
		// claimer's to publish (OwnsWill), even when the record cannot
		// be read here just now. Read for it, a node resumed from a
		// pause was refused for the whole bound ("JetStream system
		// temporarily unavailable") and published the will the
		// claimer had published already (TestClusterFencesPausedOwner
		// at load 40: fence-now's will twice).
		o.sawOther(id, epoch)
	}
	reply, handed := []byte{wireVersion, 0}, []heldPos(nil)
	if newer {
		// A newer claim of id, here or seen from elsewhere: this
		// request's claim is superseded. "Nothing to hand over" (reply
		// 0) made a claimer that still held its unread mark adopt
		// nothing and connect its client afresh, Session Present 0; the
		// newer claim then took that empty session from it, in place of
		// the session the cluster had (test/jepsen TestClusterFull,
		// 30 minutes, seed 42: ps0 lost its subscription and 23,022
		// acknowledged messages; TestReproClaimAnsweredNewer).
		reply[1] = 3
		o.n.log.Info("cluster: a release request of an older claim answered: superseded by a newer one",
			"client_id", id, "epoch", epoch, "newer", mine)
	}
	if !newer {
		// A session still moving here is handed over once it is here;
		// one still not here at the wait's bound is the stream's (cut:
		// the move keeps what its copy takes for this claim).
		cut := o.n.mv.awaitIn(id, epoch, by, req.at.Add(answerBound))
		unread := o.takeUnread(id)
		if !unread && !cut {
			// A move here that registered after the look above
			// took the mark (liveMoves.takeMark): it is waited for
			// as any (TestReproMoveUnregistered).
			cut = o.n.mv.awaitIn(id, epoch, by, req.at.Add(answerBound))
		}
		unread = unread || cut
		if !unread {
			// The mark may have just been taken by an adoption
			// (beginAdopt): its wait is set by now.
			if o.n.fault.holdsUntilFenced(id) {
				o.n.log.Warn("cluster: test fault: held messages pending until a fence", "client_id", id)
				o.n.fault.awaitFence(by)
			}
			if o.n.fault.answersLate(id) {
				o.n.log.Warn("cluster: test fault: a release request answers at its held waits' bound", "client_id", id, "epoch", epoch)
				time.Sleep(time.Until(by))
			}
			o.awaitHeld(id, by)
		}
		reply, handed = o.answer(id, epoch, mine, unread, req.at.Add(answerBound))
	}
	if v := encodeHeldPos(handed); v == "" {
		m.Respond(reply)
	} else {
		out := nats.NewMsg("")
		out.Data = reply
		out.Header.Set(heldPosHeader, v)
		if c := encodeHeldPosCopy(handed); c != "" {
			out.Header.Set(heldPosCopyHeader, c)
		}
		m.RespondMsg(out)
	}
	o.n.fault.answeredRelease(id)
}

// answer decides, once onRelease's waits are over, what a release request
// of a claim at epoch gets (onRelease), and hands the session over if it
// is here. mine is this node's own epoch for id as the request found it;
// unread, whether the request took id's unread mark before its waits;
// by, when the handover's wait for a connected client ends at the latest.
//
// A fence ends sessions here too (after a loss of contact, or at
// fenceGrace's end): the two decide one after the other for an id
// (lockEnd), and a fence that ended the session before the answer set the
// mark (endedUnread), which the answer takes: the claimer reads the
// stream. Looked at before the waits only, the mark was set too late, and
// the answer, finding no session, said "nothing to hand over": the
// claimer started the client afresh (test/jepsen TestClusterFull seed 42:
// ps2, Session Present 0 and 1,431 acknowledged messages lost;
// TestReproFenceDuringRelease).
func (o *owners) answer(id string, epoch, mine uint64, unread bool, by time.Time) (reply []byte, handed []heldPos) {
	ctx, cancel := context.WithDeadline(o.n.ctx, by)
	unlock, err := o.lockID(ctx, &o.ending, id)
	cancel()
	if err != nil {
		return o.answerFenced(id, epoch), nil
	}
	defer unlock()
	if !unread {
		o.mu.Lock()
		// A claim here since the request came (a newer epoch) set
		// the mark for itself: it is not this request's to take.
		if o.epochs[id].epoch <= epoch {
			unread = o.unread[id]
			delete(o.unread, id)
			delete(o.overtaken, id)
		}
		o.mu.Unlock()
	}
	// A node with no session for an id it did not claim since it
	// started (it was restarted after its claim, before it had the
	// session: its store never had it) cannot tell a clean client from
	// a persistent session that is in the stream only, and sends the
	// claimer there: "nothing to hand over" would start the client
	// afresh on a session the cluster has.
	unknown := o.n.sess != nil && mine == 0 && !o.n.srv.HasSession(id)
	// Only now, right before the session is taken off the broker: its
	// client may still be connected here, and until then its ops must
	// reach the stream. Disowned before the waits (2 s at most), they
	// stayed in this node's store while a Wait for them returned at
	// once: a persistent publisher's QoS 2 ids were acknowledged and
	// routed, and a claimer that read the stream (this answer came after
	// its releaseTimeout) did not know them, routed the DUP resends
	// again, and every subscriber got those messages twice
	// (TestReproOpsAfterDisown; test/jepsen TestClusterFull seed 41: 13
	// QoS 2 duplicates).
	o.disown(id)
	reply = []byte{wireVersion, 0}
	var heldFrom uint64
	// Taken before the handover: the followers here go on applying to
	// the copy until the move's finish, which carries what they applied.
	pos := o.cutPositions(id)
	if !unread && o.n.srv.HasSession(id) {
		// Before the handover too: what this node's own follower
		// applies until the move's finish is in what moves.
		pos = o.n.sess.withOwnBehind(id, pos, by)
	}
	if unread {
		reply[1] = 2
	} else if ok, from := o.n.sess.takeUnsettled(id); ok {
		// A restored copy not known to be current (held.go).
		reply[1], heldFrom = 2, from
	} else if b, done := o.handOverBy(id, by); done != nil {
		reply = append([]byte{wireVersion, 1}, b...)
		o.pending.add(id, epoch, o.n.sess != nil, done)
		o.n.mv.startOut(id, epoch)
		if handed = pos; len(handed) > 0 {
			o.n.log.Info("cluster: session handed over before its held reads were done: held subjects named for the new owner to read on from",
				"client_id", id, "epoch", epoch, "held_from", heldPosText(pos))
		}
		if slices.ContainsFunc(pos, func(p heldPos) bool { return p.node == o.n.cfg.Node }) {
			o.n.mv.namedOwn(id, epoch)
		}
	} else if unknown {
		reply[1] = 2
	}
	if reply[1] != 1 && o.takeDropped(id) {
		reply = append(reply, 1)
	}
	if heldFrom > 0 {
		if len(reply) == 2 {
			reply = append(reply, 0) // the will was not dropped
		}
		reply = binary.AppendUvarint(reply, heldFrom)
	}
	o.n.log.Info("client taken over by another node", "client_id", id, "epoch", epoch)
	return reply, handed
}

// cutPositions returns, when id's held wait here is not over (awaitHeld
// was cut at its bound: a session taken from the stream here whose
// followers have not read for it yet), where those followers are
// (heldPositions): a live handover names them for its new owner, which
// reads on from there (followHanded). Handed over without them, what the
// followers here applied after the move's finish went to no session, and
// nobody else read it for the session (test/jepsen TestClusterFull seed
// 42: ps3, 10 acknowledged messages lost; TestReproHeldPos: 38 of 342).
// None when the wait is over: what the followers read after it was also
// forwarded to the session's node (publishers see its interest by then)
// or reached the copy before the finish.
func (o *owners) cutPositions(id string) []heldPos {
	o.mu.Lock()
	_, pending := o.heldPending[id]
	o.mu.Unlock()
	if !pending {
		return nil
	}
	return o.n.sess.heldPositions(id)
}

// heldPosText is ps for a log line: node:from (or node@since) each.
func heldPosText(ps []heldPos) string {
	var b strings.Builder
	for i, p := range ps {
		if i > 0 {
			b.WriteByte(' ')
		}
		if p.from > 0 {
			fmt.Fprintf(&b, "%s:%d", p.node, p.from)
		} else {
			fmt.Fprintf(&b, "%s@%s", p.node, p.since.UTC().Format(time.RFC3339Nano))
		}
	}
	return b.String()
}

// answerFenced is answer's reply when a fence still decides the end of
// id's session once the answer's bound is over. Only a fence that ends a
// connected session holds that decision so long (fenceEnd: the wait for
// the client's last packets, up to the broker's settleTimeout); fenceID's
// end and fenceEnd's other outcomes are quick, and answers for one id
// come one at a time (onRelease). That fence ends the session here and
// sets the mark (endedUnread), which an answer after it would read: the
// claimer reads the stream. Waited for, the answer came after the
// claimer's releaseTimeout, which then read the stream all the same.
func (o *owners) answerFenced(id string, epoch uint64) []byte {
	reply := []byte{wireVersion, 2}
	if o.takeDropped(id) {
		reply = append(reply, 1)
	}
	o.n.log.Warn("cluster: a fence still ends the session: the claimer is told to read the stream",
		"client_id", id, "epoch", epoch)
	return reply
}

// lockEnd waits until nothing else decides the end of id's session here
// (a release request's answer, a fence), then holds that until the
// returned func is called. The holders do not wait for one another's
// peers: a broker takeover's settling (bounded) is the longest step.
// Taken before o.mu, never while holding it.
func (o *owners) lockEnd(id string) func() {
	unlock, _ := o.lockID(context.Background(), &o.ending, id)
	return unlock
}

// fenceBound bounds how long fence keeps trying to read the records of the
// sessions it could not read yet (no quorum right after a heal).
const fenceBound = 30 * time.Second

// staleLeaderWait is how long after its first pass fence reads again the
// records that named this node. A replica of the bucket on this node that
// led it before the loss of contact believes it still leads for up to
// 10 s without a quorum (nats-server's lost-quorum interval) and answers
// leader reads from its stale copy, first, being local: right after a
// short partition it names this node the owner of an id claimed elsewhere
// meanwhile. It steps down once it hears the others' newer term, within a
// heartbeat or two of the heal; then the read reaches the real leader.
const staleLeaderWait = deadAfter

// fence ends, here, every session (connected or not) whose client id's
// record names another node: that node claimed the id while this one could
// not hear it (cut off, paused), and its request to let go may have been
// lost with the route. It does what the request would have done: the
// connection gets DISCONNECT 0x8E, the session ends here (the claiming
// node started a fresh one), and its will follows the spec as for any
// takeover. It costs one record read per session of this node, after a
// loss of contact only. Run as a tracked goroutine.
func (o *owners) fence() {
	defer o.n.wg.Done()
	kv := o.bucket()
	if kv == nil {
		return
	}
	var ids []string
	for _, c := range o.n.srv.Clients() {
		ids = append(ids, c.ClientID)
	}
	deadline := time.Now().Add(fenceBound)
	var mine []string // read as this node's: read again (staleLeaderWait)
	again := true
	for len(ids) > 0 && o.n.ctx.Err() == nil {
		var retry []string
		for _, id := range ids {
			ctx, cancel := context.WithTimeout(o.n.ctx, 2*time.Second)
			owner, epoch, _, err := o.read(ctx, kv, ownerKey(id))
			cancel()
			if err != nil {
				retry = append(retry, id)
				continue
			}
			if owner == "" || owner == o.n.cfg.Node {
				mine = append(mine, id) // (assigned ids have no record)
				continue
			}
			o.sawOther(id, epoch)
			o.fenceEnd(id, owner, epoch)
		}
		ids = retry
		if len(ids) == 0 && again && len(mine) > 0 {
			ids, mine, again = mine, nil, false
			select {
			case <-o.n.ctx.Done():
			case <-time.After(staleLeaderWait):
			}
			continue
		}
		if len(ids) > 0 {
			if time.Now().After(deadline) {
				o.n.log.Warn("cluster: could not check the owners of some sessions after a loss of contact", "sessions", len(ids))
				return
			}
			select {
			case <-o.n.ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

// fenceEnd ends id's session here for fence, unless it was claimed here
// again since fence read the record: owner claimed it at epoch while this
// node was out of contact. A release request's answer for id comes wholly
// before or after it (lockEnd).
func (o *owners) fenceEnd(id, owner string, epoch uint64) {
	unlock := o.lockEnd(id)
	defer unlock()
	o.mu.Lock()
	newer := o.epochs[id].epoch >= epoch // claimed here again since the read
	o.mu.Unlock()
	if newer {
		return
	}
	if o.pending.answered(id, epoch) {
		// The claim the record names (or a newer one) was answered
		// with this copy: its live move takes what the copy gets
		// until its finish, and the confirmation (or confirmTimeout,
		// with hold keys) ends it here. Ended now, the move lost its
		// source and what the copy took after the export (kept in
		// this node's held subject, which a live move does not read):
		// test/jepsen TestClusterFull seed 41, ps2 on n1, answered
		// 11 ms before this fence, 6 acknowledged messages lost;
		// TestReproFenceAfterAnswer).
		o.n.log.Info("cluster: fence: a copy handed over left to its handover", "client_id", id, "owner", owner, "epoch", epoch)
		return
	}
	// Nobody adopts it: it ends here; its will too, unless the new
	// owner read it with the session from the replicated record.
	o.disown(id)
	o.n.sess.fenceHold(id)
	if _, done := o.n.srv.HandOver(id, o.n.sess != nil); done != nil {
		done(o.n.sess == nil)
	}
	o.endedUnread(id)
	o.n.fault.fenced(id)
	o.n.log.Info("session fenced: its client id was claimed by another node while this one was out of contact",
		"client_id", id, "owner", owner, "epoch", epoch)
}

// endedUnread notes that id's session was ended here by a fence, not handed
// over: the new owner's request to let go may still come (it was sent
// before the fence read the record, or its route was slow), and must be
// told to read the session from the stream, where it is when replicated,
// not that there is nothing to hand over (seen in test/jepsen TestCluster
// seed 302: a persistent publisher's session, fenced here after a loss of
// contact 0.1 s before the request came, started afresh on the new owner).
func (o *owners) endedUnread(id string) {
	if o.n.sess != nil {
		o.setUnread(id, true)
	}
}

// handOver takes id's session off the broker and returns its bytes and the
// function that ends it here once the new owner confirmed (or did not);
// done is nil when there is nothing to hand over.
func (o *owners) handOver(id string) ([]byte, func(bool)) {
	rec, done := o.n.srv.HandOver(id, o.n.sess != nil)
	return o.handOverRec(id, rec, done)
}

// handOverBy is handOver with the wait for a connected client's last
// packets ending by by at the latest (answerBound).
func (o *owners) handOverBy(id string, by time.Time) ([]byte, func(bool)) {
	rec, done := o.n.srv.HandOverBy(id, o.n.sess != nil, by)
	return o.handOverRec(id, rec, done)
}

// handOverRec encodes rec, id's session taken off the broker by handOver;
// done ends it here.
func (o *owners) handOverRec(id string, rec *broker.StoredSession, done func(bool)) ([]byte, func(bool)) {
	if rec == nil {
		return nil, nil
	}
	b, err := encodeSession(rec, o.n.here())
	switch {
	case err != nil:
		o.n.log.Error("cluster: session not handed over", "client_id", id, "err", err)
	case int64(len(b))+2 > o.n.eng.nc.MaxPayload():
		// Moving queues in pieces is the next step; until then a session
		// this large starts afresh on the new node.
		o.n.log.Error("cluster: session too large to hand over in one message; its queued messages are dropped",
			"client_id", id, "bytes", len(b), "messages", len(rec.Queue))
	default:
		return b, done
	}
	done(o.n.sess == nil) // ends here: the new node reads it from the stream, if replicated
	return nil, nil
}

// holdWill keeps the delayed will of rec, a session this node takes over
// for a connecting client, from firing before the broker attaches the
// client (which cancels it, or publishes it if the client starts a new
// session): the CONNECT arrived before the will was due, so it must not
// be sent for a resumed session [MQTT-3.1.3-9], yet reading what was held
// for the session meanwhile (takeHeld) can outlast a short delay (seen:
// a 3 s delay, 5 s of held reads on a loaded machine, the will sent while
// the client waited for its CONNACK). The will waits for the takeover's
// bound too; a CONNECT that fails after all delays it by that much. A
// will already due when the CONNECT came stays due.
func holdWill(rec *broker.StoredSession, bound time.Duration) {
	if rec.Will == nil || rec.WillDelay <= 0 {
		return
	}
	now := time.Now()
	at := rec.WillAt
	if at.IsZero() {
		at = now.Add(rec.WillDelay)
	}
	if at.After(now) {
		rec.WillAt = at.Add(bound)
	}
}

// heldWaitMax bounds, all together, the waits of a release request's
// answer (onRelease): for the held messages of a session taken from the
// stream here (a janitor's adoption, or a claim its previous owner did
// not answer: awaitHeld, looked at twice) and for a session moving here
// (awaitIn). It is shorter than the claimer's releaseTimeout, so that it
// is answered: the rest (1 s) is for the handover itself (a connected
// client's last packets settled) and the reply's way on a loaded machine.
// A bound per wait added up to 4 s and more: the claimer had given up and
// read the stream, while the copy here went on taking messages it then
// handed over to nobody (test/jepsen TestClusterTransports NodeKill: an
// answer after 3.7 s; TestReproReleaseInTime).
const heldWaitMax = 2 * time.Second

// awaitHeld waits, until by at the latest, until the held messages of id's
// session, taken from the stream here, are applied to it: handed over before,
// the session would leave without them, and the new node does not read
// them (the old one answered).
func (o *owners) awaitHeld(id string, by time.Time) {
	o.mu.Lock()
	ch := o.heldPending[id]
	o.mu.Unlock()
	if o.n.fault.holdsHeld(id) {
		o.n.log.Warn("cluster: test fault: held messages pending for a release request", "client_id", id)
		ch = make(chan struct{}) // never closed: the whole bound
	}
	if ch == nil {
		return
	}
	t := time.NewTimer(time.Until(by))
	defer t.Stop()
	select {
	case <-ch:
		return // done, even if the bound passed meanwhile
	default:
	}
	select {
	case <-ch:
	case <-t.C:
		o.n.log.Warn("cluster: session handed over before its held messages were applied", "client_id", id)
	}
}

// holdRelease marks ids' held messages as pending (awaitHeld) and
// returns the function that clears the mark.
func (o *owners) holdRelease(ids []string) func() {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.holdReleaseLocked(ids)
}

// holdReleaseLocked is holdRelease with o.mu held.
func (o *owners) holdReleaseLocked(ids []string) func() {
	ch := make(chan struct{})
	if o.heldPending == nil {
		o.heldPending = map[string]chan struct{}{}
	}
	for _, id := range ids {
		o.heldPending[id] = ch
	}
	return func() {
		o.mu.Lock()
		for _, id := range ids {
			if o.heldPending[id] == ch {
				delete(o.heldPending, id)
			}
		}
		o.mu.Unlock()
		close(ch)
	}
}
