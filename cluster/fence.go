package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/roost-mqtt/roost/broker"
)

// Fencing a stale owner.
//
// A node that claims a client id asks the previous owner to let go, but
// does not wait for one that does not answer (releaseTimeout): a paused
// (SIGSTOP, VM freeze) or cut-off node is not asked again. Such a node must
// not go on acting for the id once it runs again, so every node watches
// the ownership bucket: a record naming another node with an epoch newer
// than this node's own claim means the id is no longer this node's, and
// its connection is taken over here as on a takeover (DISCONNECT 0x8E,
// will by the takeover rules, [MQTT-3.1.4-3]). A session that outlives the
// connection is kept for fenceGrace, for a release request that may still
// be on its way; if none takes it, the session ends here, and its pending
// will with it [MQTT-3.1.2-8]: the new owner started a fresh session, so
// for the client this one has ended.
//
// Handing a session over is confirmed: the old owner keeps the session
// (offline, its timers stopped) until the new owner says it adopted it
// (roost.ownok.<old owner>). A reply the new owner never read (it gave up
// waiting, or the old owner was paused and answers a stale request) gets
// no confirmation, and the old owner then ends the session as above, so
// that its will is published once, here, rather than lost in the reply.

const (
	// ownOKSubject.<node>: a new owner's confirmation that it adopted a
	// session node handed over.
	ownOKSubject = subjPrefix + ".ownok"
	// confirmTimeout is how long an old owner waits for that
	// confirmation: longer than the new owner waits for the session.
	confirmTimeout = releaseTimeout + time.Second
	// fenceGrace is how long a fenced session waits for a release request
	// before it ends here.
	fenceGrace = releaseTimeout + time.Second
)

// handovers holds the sessions this node handed over and not yet saw
// adopted, by client id and epoch of the claim they went to.
type handovers struct {
	mu sync.Mutex
	m  map[handoverKey]*pendingHandover
	// expired, if set, is called before a handover's done for want of a
	// confirmation: the session ends here after all.
	expired func(id string)
	// claimedAgain, if set, reports whether this node claimed id after
	// the claim at epoch that a handover went to: the expiring handover
	// then leaves the copy to that newer claim (owners.newerHere), as a
	// fence's end does. Ended, the copy's OpSessionDel was appended under
	// the newer claim's epoch, not as a disowned copy's, and went to the
	// stream as the session's newest op: the next claimer read an ended
	// session, Session Present 0 and every queued message lost (test/jepsen
	// TestClusterFull short faults, seeds 438 and 461: n2 handed ps0 over
	// to n1's claim at epoch 2, claimed it back at epoch 3 while n1's
	// adoption never came, and the handover's end at 04.645 wrote
	// "SessDel e3"; TestReproHandoverExpiryClaimedAgain).
	claimedAgain func(id string, epoch uint64) bool
}

type handoverKey struct {
	id    string
	epoch uint64
}

type pendingHandover struct {
	done  func(adopted bool)
	timer *time.Timer
}

// add records a handed-over session's done function (broker.HandOver) and
// calls it if no confirmation comes within confirmTimeout: the session then
// ends here, with its will unless the new owner read the session (will
// included) from its replicated record, as it does when the old owner's
// answer does not come (replicated).
func (h *handovers) add(id string, epoch uint64, replicated bool, done func(bool)) {
	k := handoverKey{id, epoch}
	p := &pendingHandover{done: done}
	h.mu.Lock()
	if h.m == nil {
		h.m = make(map[handoverKey]*pendingHandover)
	}
	h.m[k] = p
	p.timer = time.AfterFunc(confirmTimeout, func() {
		if h.take(k) == p {
			if h.claimedAgain != nil && h.claimedAgain(k.id, k.epoch) {
				return
			}
			if h.expired != nil {
				h.expired(k.id)
			}
			done(!replicated)
		}
	})
	h.mu.Unlock()
}

// extend gives the pending handover k d from now, if it is still pending:
// a live move of the session is under way (handover_live.go).
func (h *handovers) extend(k handoverKey, d time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if p := h.m[k]; p != nil {
		// Should the timer have fired meanwhile, its second run finds
		// the handover taken and does nothing.
		p.timer.Reset(d)
	}
}

// answered reports whether a handover of id to a claim at epoch or later
// is pending.
func (h *handovers) answered(id string, epoch uint64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for k := range h.m {
		if k.id == id && k.epoch >= epoch {
			return true
		}
	}
	return false
}

// dropBefore forgets id's pending handovers to claims older than epoch,
// without their done: a claim of id here at epoch resumes that session
// (owners.resumeHere).
func (h *handovers) dropBefore(id string, epoch uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for k, p := range h.m {
		if k.id == id && k.epoch < epoch {
			p.timer.Stop()
			delete(h.m, k)
		}
	}
}

// take removes and returns the pending handover k, nil if there is none.
func (h *handovers) take(k handoverKey) *pendingHandover {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.m[k]
	delete(h.m, k)
	return p
}

// encodeOwnerClaim is a release request's or confirmation's body: the
// claim's epoch and the client id.
func encodeOwnerClaim(epoch uint64, id string) []byte {
	return appendString(binary.AppendUvarint([]byte{wireVersion}, epoch), id)
}

func decodeOwnerClaim(b []byte) (epoch uint64, id string, err error) {
	r := reader{b: b}
	if r.byte() != wireVersion {
		return 0, "", errWire
	}
	epoch, id = r.uvarint(), r.string()
	if r.err != nil {
		return 0, "", errWire
	}
	return epoch, id, nil
}

// confirm tells node, which handed id's session over, that it was adopted.
func (o *owners) confirm(node, id string, epoch uint64) {
	if err := o.n.eng.nc.Publish(ownOKSubject+"."+node, encodeOwnerClaim(epoch, id)); err != nil {
		o.n.log.Warn("cluster: handover not confirmed to the previous owner", "client_id", id, "peer", node, "err", err)
	}
}

// onConfirm ends a handed-over session here: the new owner has it.
func (o *owners) onConfirm(m *nats.Msg) {
	epoch, id, err := decodeOwnerClaim(m.Data)
	if err != nil {
		o.n.log.Warn("cluster: bad handover confirmation")
		return
	}
	if p := o.pending.take(handoverKey{id, epoch}); p != nil {
		p.timer.Stop()
		if o.newerHere(id, epoch) {
			// Claimed here again since: the copy is that claim's, to
			// replace by the session it adopts or to resume
			// (resumeHere). Ended now, its end went to the stream at
			// the newer claim's epoch (its ops are no longer kept
			// here) and deleted the session's record there while that
			// claim read it (a move cut after its old owner finished:
			// TestReproLateAdoption/back, Session Present 0).
			o.n.log.Info("cluster: a handover confirmed after this node claimed the id again; the copy left to that claim",
				"client_id", id, "epoch", epoch)
			return
		}
		p.done(false) // the will went with the session
		// Its new owner has it: a fence's hold keys are not needed.
		o.n.sess.unfenceHold(id)
	}
}

// watch follows the ownership bucket and fences this node's sessions whose
// ids another node claimed, until the node stops. A watcher that ends (the
// bucket's stream lost its leader for long, or this node was cut off) is
// started again from the revision after the last one it delivered, so that
// records written meanwhile are not lost (UpdatesOnly would start from
// the new ones: a claim made while this node was cut off was then seen by
// fence alone). Only the first try starts from the new records: a try
// after one that failed, or after a watcher that delivered nothing,
// starts from every current record (the others are read, and fence
// those of this node's sessions claimed elsewhere), since the records
// written in between are not known. UpdatesOnly then missed a claim
// (TestReproFenceWindowEnded at load: n2's first two tries timed out,
// 5 s each, while n3, which claimed a session of n2's meanwhile, was
// paused; the third began after the record, and n2 never fenced its copy;
// fence waits for a paused peer to come back).
func (o *owners) watch(kv jetstream.KeyValue) {
	defer o.n.wg.Done()
	var last uint64
	for try, backoff := 0, 100*time.Millisecond; o.n.ctx.Err() == nil; try, backoff = try+1, min(2*backoff, 2*time.Second) {
		opts := []jetstream.WatchOpt{jetstream.IgnoreDeletes(), jetstream.UpdatesOnly()}
		switch {
		case last > 0:
			opts = []jetstream.WatchOpt{jetstream.IgnoreDeletes(), jetstream.ResumeFromRevision(last + 1)}
		case try > 0:
			opts = []jetstream.WatchOpt{jetstream.IgnoreDeletes()}
		}
		w, err := kv.WatchAll(o.n.ctx, opts...)
		if err != nil {
			o.n.log.Warn("cluster: watching client-id owners", "err", err, "backoff", backoff)
			select {
			case <-o.n.ctx.Done():
			case <-time.After(backoff):
			}
			continue
		}
		for e := range w.Updates() {
			if e != nil {
				last = max(last, e.Revision())
				o.onRecord(e)
			}
		}
		w.Stop()
	}
}

// onRecord fences id if its new record names another node.
func (o *owners) onRecord(e jetstream.KeyValueEntry) {
	id, err := keyID(e.Key())
	if err != nil {
		o.n.log.Warn("cluster: unreadable owner key", "key", e.Key(), "err", err)
		return
	}
	node, epoch, err := decodeOwner(e.Value())
	if err != nil {
		o.n.log.Warn("cluster: unreadable owner record", "key", e.Key(), "err", err)
		return
	}
	if node != o.n.cfg.Node {
		o.sawOther(id, epoch)
		o.fenceID(id, node, epoch)
	}
}

// fenceID takes id off this node, now that node owns it at epoch, unless
// this node's own claim is newer.
func (o *owners) fenceID(id, node string, epoch uint64) {
	if o.newerHere(id, epoch) || o.n.fault.holdsHeld(id) {
		return
	}
	if leave, first := o.n.fault.leavesClaim(id); leave {
		if first {
			o.n.log.Info("cluster: test fault: a claim's record left until the ops held here landed", "client_id", id, "owner", node, "epoch", epoch)
			o.n.goTracked(func() { o.landThenFence(id, node, epoch) })
		}
		return
	}
	o.overtake(id, epoch)
	o.n.fault.sawNewerRecord(id)
	// A move of id here not adopted yet has no session to fence: it
	// learns of the record and adopts a kept, fenced copy (cutNow). One
	// adopted has it in the server by now.
	if o.n.mv != nil && o.n.mv.sawNewer(id, epoch) {
		o.n.log.Info("cluster: a newer claim's record seen while the session moves here; the move's copy is to be kept for it",
			"client_id", id, "owner", node, "epoch", epoch)
	}
	o.disown(id)
	if !o.n.srv.Fence(id, o.n.sess != nil) {
		return
	}
	o.n.log.Info("session fenced: its client id is owned by another node (owner records)", "client_id", id, "owner", node, "epoch", epoch)
	if !o.pending.answered(id, epoch) {
		// No live move out carries what the copy keeps (keep.go).
		o.n.sess.fencedKeep(id)
	}
	o.endFenced(id, epoch)
}

// fenceCut fences id's session, adopted here by a live move after a newer
// claim at epoch was told to read the stream (adoptCut): the watcher saw
// that claim's record before the session was here, and nobody hands this
// copy over.
func (o *owners) fenceCut(id string, epoch uint64) {
	if o.newerHere(id, epoch) || !o.n.srv.Fence(id, o.n.sess != nil) {
		return
	}
	o.endFenced(id, epoch)
}

// endFenced ends id's session, fenced here for a record at epoch, after
// fenceGrace, unless a release request or a claim here came for it.
func (o *owners) endFenced(id string, epoch uint64) {
	o.mu.Lock()
	if o.fenced == nil {
		o.fenced = make(map[string]uint64)
	}
	o.fenced[id] = epoch
	o.mu.Unlock()
	time.AfterFunc(fenceGrace, func() {
		// Only the session this fence took off, and only if no release
		// request came for it: the id may have been claimed here again
		// and handed over since, and ending that copy while its move is
		// under way makes the new owner fall back to the stream (a stale
		// copy, and what it held meanwhile overflows the queue).
		// A release request's answer and this end exclude each
		// other (lockEnd): an answer after it reads the mark
		// endedUnread sets; one before it took the fence off.
		unlock := o.lockEnd(id)
		defer unlock()
		o.mu.Lock()
		due := o.fenced[id] == epoch
		if due {
			delete(o.fenced, id)
		}
		o.mu.Unlock()
		if !due || o.n.ctx.Err() != nil || o.newerHere(id, epoch) {
			return
		}
		// Handed over to that claim meanwhile (a release request
		// answered before this fence was noted: a move's cut copy,
		// adoptCut): the handover's end decides, not this timer, which
		// ended the copy while its move was under way.
		if o.pending.answered(id, epoch) {
			o.n.log.Info("cluster: a fence's end left to the handover of the copy to the fence's claim", "client_id", id, "epoch", epoch)
			return
		}
		// Held for here from its end, not from the fence: most fences
		// are followed by the release request within the grace (the
		// watcher saw the record first), and hold keys out for each
		// filled the held subjects with copies of every message, which
		// a claim reading them since a stale last op may deliver again
		// (TestClusterFull seed 44 with hold keys from the fence: 311
		// QoS 2 duplicates, held copies delivered again at a claim).
		o.n.sess.fenceHold(id)
		if o.n.srv.EndSession(id, o.n.sess == nil) {
			o.endedUnread(id)
		}
		o.n.sess.endRestored(id)
	})
}

// overtake notes epoch, a record naming another node, for a claim of id
// here still taking the session from the stream (owners.overtaken).
func (o *owners) overtake(id string, epoch uint64) {
	o.mu.Lock()
	unread := o.unread[id]
	if unread {
		if o.overtaken == nil {
			o.overtaken = map[string]uint64{}
		}
		o.overtaken[id] = max(o.overtaken[id], epoch)
	}
	o.mu.Unlock()
	if unread {
		o.n.fault.sawRecord(id)
	}
}

// newerHere reports whether this node claimed id at an epoch after epoch.
func (o *owners) newerHere(id string, epoch uint64) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.epochs[id].epoch > epoch
}

var errOwnerKey = errors.New("cluster: not an owner key")

// keyID is ownerKey's inverse.
func keyID(key string) (string, error) {
	if len(key) < 2 || key[:2] != "c." {
		return "", errOwnerKey
	}
	key = key[2:]
	if key == "=" {
		return "", nil
	}
	b := make([]byte, 0, len(key))
	for i := 0; i < len(key); i++ {
		if key[i] != '=' {
			b = append(b, key[i])
			continue
		}
		if i+2 >= len(key) {
			return "", errOwnerKey
		}
		hi, lo := unhex(key[i+1]), unhex(key[i+2])
		if hi < 0 || lo < 0 {
			return "", errOwnerKey
		}
		b = append(b, byte(hi<<4|lo))
		i += 2
	}
	return string(b), nil
}

// CheckOwner implements broker.OwnerChecker: the first routing of a
// persistent session's QoS 2 id waits for it, once the id's nonce is
// durable. The record is read from the bucket's leader (never this node's
// replica, stale right after a pause). What this node knows settles it
// without a read: a session disowned here (a fence ends it by a takeover,
// whose settle applies what the client had sent), or a newer record
// naming another node that the watcher saw. A replica here that led the
// bucket before a loss of contact may still answer as its leader until
// it hears the others' newer term (staleLeaderWait); the nonce's
// replicated write before the read makes that rare, not impossible.
func (n *Node) CheckOwner(clientID string) error {
	if n.sess == nil {
		return nil // sessions not replicated: no other node resumes one
	}
	if n.sess.lostHere(clientID) || n.own.ownedElsewhere(clientID) {
		return broker.ErrOwnedElsewhere
	}
	if n.own.bucket() == nil {
		return errNotReady
	}
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.ForwardTimeout)
	defer cancel()
	node, epoch, err := n.own.readRetrying(ctx, ownerKey(clientID))
	switch {
	case err != nil && n.own.ownedElsewhere(clientID):
		return broker.ErrOwnedElsewhere // seen meanwhile by the watcher
	case err != nil:
		return err
	case node != "" && node != n.cfg.Node:
		n.own.sawOther(clientID, epoch)
		return broker.ErrOwnedElsewhere
	}
	return nil
}

var _ broker.OwnerChecker = (*Node)(nil)

// OwnsWill implements broker.WillGuard: the will of a persistent session is
// published only by the node the ownership record names. A record naming
// another node that this node saw lately, newer than its own claim,
// settles it without a read: right after a heal the read may not be
// answered within forward_timeout, and a node fenced by another's claim
// then published its taken-over session's will a second time
// (TestClusterRejectingCutIsSafe at load 30). When the record cannot be
// read (no quorum) and nothing is known here, the will is published: a
// will twice is less harm than none, and the log says so.
func (n *Node) OwnsWill(clientID string) bool {
	if n.sess == nil {
		return true // sessions not replicated: nobody else has the will
	}
	if n.own.ownedElsewhere(clientID) {
		n.log.Info("will left to the client id's owner (a newer record seen here)", "client_id", clientID)
		return false
	}
	kv := n.own.bucket()
	if kv == nil {
		return true
	}
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.ForwardTimeout)
	defer cancel()
	node, epoch, err := n.own.readRetrying(ctx, ownerKey(clientID))
	if err != nil && n.own.ownedElsewhere(clientID) {
		// Seen meanwhile (the owner records' watcher).
		n.log.Info("will left to the client id's owner (a newer record seen here)", "client_id", clientID)
		return false
	}
	if err != nil {
		n.log.Warn("cluster: owner of a will's client id unknown; publishing it", "client_id", clientID, "err", err)
		return true
	}
	if node != "" && node != n.cfg.Node {
		n.log.Info("will left to the client id's owner", "client_id", clientID, "owner", node, "epoch", epoch)
		return false
	}
	return true
}

// readRetrying is read, tried again until ctx ends: a node resumed from a
// pause has its reads refused for a moment ("JetStream system temporarily
// unavailable") while it catches up with the cluster, and a will must not
// be published for want of one answer.
func (o *owners) readRetrying(ctx context.Context, key string) (node string, epoch uint64, err error) {
	for backoff := 50 * time.Millisecond; ; backoff = min(2*backoff, 500*time.Millisecond) {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		node, epoch, _, err = o.read(actx, nil, key)
		cancel()
		if err == nil {
			return node, epoch, nil
		}
		select {
		case <-ctx.Done():
			return "", 0, err
		case <-time.After(backoff):
		}
	}
}
