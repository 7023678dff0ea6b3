package cluster

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/roost-mqtt/roost/broker"
)

// Wills of clean sessions.
//
// Only persistent sessions are replicated (sessions.go), and their wills
// with them. A connection whose session ends with it (MQTT 3.1.1 clean
// session 1, MQTT 5 session expiry 0) has nothing in the partition
// streams, yet its will must still be published when its node dies with
// it [MQTT-3.1.2-8]: a node's death closes the network connection without
// a DISCONNECT. So the will of such a connection rides in its client id's
// owner record (owner.go, ownerWillVersion), written by the claim that
// every CONNECT makes anyway: it costs no extra replicated write, only
// the will's bytes in one that is made regardless, and nothing at all for
// connections without a will.
//
// Exactly one node publishes such a will: the one whose compare-and-set
// removes it from the record. Every path goes through one:
//
//   - The connection ends on its node, alive (its client went away, the
//     keep alive ran out): the node rewrites the record without the will,
//     on the condition that it is still the one the CONNECT wrote
//     (WillDone: a compare-and-set on its revision), and publishes the
//     will only once that is confirmed, or drops it on a normal
//     DISCONNECT, or when the node shuts down (the broker drops the wills
//     of the clients it disconnects then: they did nothing wrong; the
//     first attempt runs before Shutdown returns, so the survivors do not
//     publish them later). Without a quorum (cut off, or the others gone)
//     it tries again until the rewrite is decided or the node stops; a
//     will not removed stays recorded, for the survivors.
//   - A claim whose write was not confirmed (a timeout) may have been
//     applied: its connection is refused, and the record is rewritten
//     without its will if it holds it (clearUnconfirmed).
//   - The client connects again on the same node before that rewrite:
//     the new claim replaces the record, and the old will stays the
//     node's to publish (supersede); a takeover of a connection still up
//     publishes it as on one node (the broker's attach).
//   - The client connects on another node: its claim replaces the record
//     and publishes the will it removed (publishReplacedWill), unless the
//     previous node answers that its client disconnected normally (the
//     rewrite it had not finished). The old connection, if still up, is
//     taken over without its will (HandOver, WillTakenOver), and so is a
//     connection that a cut-off node fences after the heal. The old
//     connection ended without a DISCONNECT and its session (expiry 0)
//     with it, so its will is due at once [MQTT-3.1.2-8, MQTT-3.1.3-9],
//     as a takeover on one node publishes it [MQTT-3.1.4-3].
//   - The node dies (or is cut off, or stops before the rewrite): the
//     janitor (janitor.go) finds the record naming a silent node; the
//     chosen survivor claims it as it claims a persistent session
//     (compare-and-set on the revision its scan read, epoch + 1, so that
//     one survivor wins, and the node is fenced should it come back) and
//     publishes the will at once, for the same reason. A claim of it
//     whose write was not confirmed may have replaced the record, and the
//     will with it, by one naming the survivor: the next scan finds no
//     will to adopt. So the survivor reads the record again until it
//     knows (settleUnsureWills), and publishes the will if its own write
//     was the one applied.
//   - A node killed and restarted within adopt_after is heard from again
//     before any survivor adopts its records: its own janitor's first
//     scan after start claims and publishes the recorded wills naming it
//     of connections it no longer has (leftover), the same way. A client
//     back on the node before that scan has its claim replace the record:
//     that claim publishes the will, before the new connection's CONNACK
//     (publishInheritedWill), as a claim from another node would.
//
// The price: a node that dies in the instant between its confirmed
// rewrite and the publication loses that will (before, the will was
// published first and could come twice).

// ClaimWill implements broker.CleanWillKeeper: Claim, with will recorded in
// the owner record. token is the revision of the record written, for
// WillDone; it is non-zero also with an error that came after the write.
func (n *Node) ClaimWill(clientID string, will *broker.Message) (token uint64, err error) {
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.ForwardTimeout)
	defer cancel()
	if err := n.catch.wait(ctx); err != nil {
		n.counters.claimsFailed.Add(1)
		return 0, err
	}
	if err := n.awaitRestored(ctx, clientID); err != nil { // held.go
		n.counters.claimsFailed.Add(1)
		return 0, err
	}
	token, epoch, err := n.own.claimWill(ctx, clientID, will, nil)
	if token == 0 && epoch != 0 && will != nil {
		// Not confirmed, maybe applied: the connection is refused, and
		// its will must not stay recorded for the survivors to publish
		// should this node die later.
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.own.clearUnconfirmed(clientID, epoch)
		}()
	}
	if token != 0 {
		n.own.mu.Lock()
		n.own.wills[token] = epoch
		n.own.mu.Unlock()
	}
	if err != nil {
		n.counters.claimsFailed.Add(1)
		return token, err
	}
	n.sess.watchClaimed(clientID) // claimhold.go
	n.counters.claims.Add(1)
	return token, nil
}

// clearUnconfirmed rewrites id's owner record without its will if it is
// the one an unconfirmed claim of this node at epoch may have written
// (this node, that epoch, a will), trying until that is decided or the
// node stops.
func (o *owners) clearUnconfirmed(id string, epoch uint64) {
	for backoff := 100 * time.Millisecond; o.n.ctx.Err() == nil; backoff = min(2*backoff, time.Second) {
		ctx, cancel := context.WithTimeout(o.n.ctx, o.n.cfg.ForwardTimeout)
		done, err := o.clearUnconfirmedOnce(ctx, id, epoch)
		cancel()
		if done {
			return
		}
		o.n.log.Debug("cluster: will of an unconfirmed claim not cleared yet", "client_id", id, "err", err)
		select {
		case <-o.n.ctx.Done():
		case <-time.After(backoff):
		}
	}
}

func (o *owners) clearUnconfirmedOnce(ctx context.Context, id string, epoch uint64) (done bool, err error) {
	kv := o.bucket()
	if kv == nil {
		return false, errNotReady
	}
	owner, e, will, rev, err := o.readWill(ctx, ownerKey(id))
	if err != nil {
		return false, err
	}
	if owner != o.n.cfg.Node || e != epoch || will == nil {
		return true, nil // not written, or replaced since
	}
	_, err = kv.Update(ctx, ownerKey(id), encodeOwner(o.n.cfg.Node, epoch), rev)
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return false, err // changed meanwhile: look again
	}
	if err == nil {
		o.n.log.Info("cluster: will of an unconfirmed claim cleared", "client_id", id, "epoch", epoch)
	}
	return err == nil, err
}

// WillDone implements broker.CleanWillKeeper: the connection whose claim
// wrote revision token, recording its will, ended here; publish (if not
// nil) publishes the will, which is due. The record is rewritten without
// the will (one compare-and-set on that revision), and publish is called
// only if that removed it: a node whose record another node replaced
// meanwhile (a survivor adopted it while this node was cut off, or the
// client connected elsewhere) leaves the will to that node, which
// publishes the will it removed (adoptCleanWills, publishReplacedWill).
// A later claim here left the old will to this node (supersede). The
// rewrite is tried once at once (the broker's Shutdown waits for its
// connections, and the node stops after the broker), then, if not
// decided (no quorum), on a goroutine until it is or the node stops: a
// will not removed stays recorded, and the survivors publish it when this
// node is gone.
func (n *Node) WillDone(clientID string, token uint64, publish func()) {
	if token == 0 {
		if publish != nil {
			publish() // nothing recorded
		}
		return
	}
	if publish == nil {
		// Dropped (a normal DISCONNECT): a claim elsewhere that replaces
		// the record before the rewrite below must not publish it.
		n.own.noteDropped(clientID)
	}
	decided := func(removed bool, err error) {
		n.own.mu.Lock()
		delete(n.own.wills, token)
		n.own.mu.Unlock()
		switch {
		case err != nil:
			n.log.Warn("cluster: will of an ended connection still recorded; the survivors publish it once this node is gone",
				"client_id", clientID, "err", err)
		case removed && publish != nil:
			publish()
		case publish != nil:
			n.log.Info("will of an ended connection left to the node that took its client id's record over", "client_id", clientID)
		}
	}
	if kv := n.own.bucket(); kv != nil {
		ctx, cancel := context.WithTimeout(n.ctx, n.cfg.ForwardTimeout)
		removed, err := n.own.forgetWillOnce(ctx, kv, clientID, token)
		cancel()
		if err == nil {
			decided(removed, nil)
			return
		}
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		decided(n.own.forgetWill(clientID, token))
	}()
}

// droppedTTL is how long a node remembers that it dropped the will of an
// ended connection, for a release request whose claim replaced the record
// before this node could rewrite it: longer than that rewrite takes.
const droppedTTL = time.Minute

// noteDropped remembers that the will of id's ended connection was
// dropped here (its client sent a normal DISCONNECT).
func (o *owners) noteDropped(id string) {
	o.mu.Lock()
	o.dropped[id] = time.Now()
	for k, at := range o.dropped {
		if time.Since(at) > droppedTTL {
			delete(o.dropped, k)
		}
	}
	o.mu.Unlock()
}

// takeDropped reports whether id's last connection here dropped its will
// lately, forgetting it.
func (o *owners) takeDropped(id string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	at, ok := o.dropped[id]
	delete(o.dropped, id)
	return ok && time.Since(at) <= droppedTTL
}

// supersede notes, before this node's claim replaces its own record at
// rev, that the record may hold the will of a connection that ended here
// and whose WillDone has not rewritten it yet: that will stays this
// node's to publish (WillDone). Not for another node's record: the
// claimer publishes the will it replaces (claimWill).
func (o *owners) supersede(rev uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.wills[rev]; ok {
		o.superseded[rev] = time.Now()
	}
}

// unsupersede undoes supersede: the claim did not replace the record.
func (o *owners) unsupersede(rev uint64) {
	o.mu.Lock()
	delete(o.superseded, rev)
	o.mu.Unlock()
}

func (o *owners) takeSuperseded(rev uint64) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	_, ok := o.superseded[rev]
	delete(o.superseded, rev)
	return ok
}

// forgetWill rewrites id's owner record, at revision rev, without its
// will, and reports whether it did, or whether a later claim here
// replaced it (supersede: the will is this node's to publish); a record
// another node wrote since is left alone. The epoch stays: the
// record is the same claim's. It tries until that is decided or the node
// stops.
func (o *owners) forgetWill(id string, rev uint64) (bool, error) {
	kv := o.bucket()
	if kv == nil {
		return false, errNotReady
	}
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, time.Second) {
		ctx, cancel := context.WithTimeout(o.n.ctx, o.n.cfg.ForwardTimeout)
		removed, err := o.forgetWillOnce(ctx, kv, id, rev)
		cancel()
		if err == nil || o.n.ctx.Err() != nil {
			return removed, err
		}
		select {
		case <-o.n.ctx.Done():
			return false, err
		case <-time.After(backoff):
		}
	}
}

func (o *owners) forgetWillOnce(ctx context.Context, kv jetstream.KeyValue, id string, rev uint64) (bool, error) {
	o.mu.Lock()
	epoch := o.wills[rev]
	o.mu.Unlock()
	_, err := kv.Update(ctx, ownerKey(id), encodeOwner(o.n.cfg.Node, epoch), rev)
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		// Claimed meanwhile: by a new connection here, which left the
		// old will to this node (superseded), or by another node, which
		// took it. Or this very rewrite, sent before, was applied
		// without its confirmation reaching here: the record is then
		// this claim's (this node, this epoch) without a will.
		if o.takeSuperseded(rev) {
			return true, nil
		}
		owner, e, will, _, err := o.readWill(ctx, ownerKey(id))
		if err != nil {
			return false, err
		}
		return owner == o.n.cfg.Node && e == epoch && will == nil, nil
	}
	if err == nil {
		o.n.log.Debug("cluster: will of an ended connection forgotten", "client_id", id, "epoch", epoch)
	}
	return err == nil, err
}

// adoptCleanWills claims the records of rs, each naming a silent node
// (or this node, before it restarted: leftover) and holding a will, and
// publishes the wills: see above. A record that changed since the scan
// read it (the client reconnected, or another survivor won) fails its
// compare-and-set: no will for it here.
func (s *sessions) adoptCleanWills(ctx context.Context, rs []ownerScan) error {
	return s.eachParallel(rs, func(r ownerScan) error {
		epoch, ok, err := s.claimOrphan(ctx, r)
		if err != nil && epoch != 0 {
			s.unsure.note(r, epoch, time.Now().Add(2*s.n.cfg.ForwardTimeout))
		}
		if !ok || err != nil {
			return err
		}
		// This claim replaced the dead node's record: one noted before
		// for the same record did not.
		s.unsure.drop(r.id)
		s.n.log.Info("will of a clean session of a silent node adopted", "client_id", r.id, "from", r.owner, "epoch", epoch, "topic", r.will.Topic)
		s.n.srv.PublishOrphanWill(r.will)
		return nil
	})
}

// leftover reports whether id's owner record naming this node at epoch is
// from before this node started: this node neither claimed it since
// (claims note their epoch before they write) nor has a session for id.
func (o *owners) leftover(id string, epoch uint64) bool {
	o.mu.Lock()
	mine := o.epochs[id].epoch >= epoch
	o.mu.Unlock()
	return !mine && !o.n.srv.HasSession(id)
}

// publishReplacedWill publishes will, the will of a connection of id on
// prev (another node) that this node's claim removed from the record: the
// new connection takes the old one over, which then ends without a normal
// DISCONNECT, its session (expiry 0) with it, so its will is due at once
// [MQTT-3.1.2-8, MQTT-3.1.3-9], as a takeover on one node publishes it.
// prev, alive, does not (it would have to remove it from the record:
// WillDone, HandOver); dead or cut off, it cannot. Nothing when prev said
// the will was dropped there (its client's normal DISCONNECT, whose
// rewrite of the record this claim overtook).
func (o *owners) publishReplacedWill(id, prev string, will *broker.Message, dropped bool) {
	if will == nil {
		return
	}
	if dropped {
		o.n.log.Info("will of a replaced record not published: its connection ended normally", "client_id", id, "previous", prev)
		return
	}
	o.n.log.Info("will of a replaced record published", "client_id", id, "previous", prev, "topic", will.Topic)
	o.n.srv.PublishOrphanWill(will)
}

// publishInheritedWill publishes will, the will of a connection of id that
// this node's previous process had (killed with it), which this node's
// claim removed from the record. That connection ended without a
// DISCONNECT, its session with it, so its will was due then
// [MQTT-3.1.2-8]; published before the returning client's CONNACK, it
// comes before anything the new connection publishes (an "online" status
// after the will's "offline"). Before, it was dropped: a client back
// within adopt_after of the restart left its will unpublished.
func (o *owners) publishInheritedWill(id string, will *broker.Message) {
	if will == nil {
		return
	}
	o.n.log.Info("will of a connection of this node's previous process published", "client_id", id, "topic", will.Topic)
	o.n.srv.PublishOrphanWill(will)
}

// WillTakenOver implements broker.CleanWillKeeper: the connection whose
// claim wrote revision token was taken over for another node, whose claim
// replaced the record and publishes the will (publishReplacedWill).
func (n *Node) WillTakenOver(_ string, token uint64) {
	n.own.mu.Lock()
	delete(n.own.wills, token)
	delete(n.own.superseded, token)
	n.own.mu.Unlock()
}

// unsureWills are the clean wills of silent nodes whose claim by this
// node's janitor was written but not confirmed (claimOrphan's error, as
// under load: the acknowledgement did not come in time). Applied all the
// same, such a write replaced the dead node's record, will and all, by
// one naming this node: the next scan found nothing to adopt, and the
// will was never published (TestClusterDeadNodeCleanWills at load 60-95:
// cw-gone's claim "context deadline exceeded", no will after it;
// TestReproUnsureWillClaim). Each is settled by reading the record again
// (settleUnsureWills).
type unsureWills struct {
	mu sync.Mutex
	m  map[string]unsureWill
}

// unsureWill is one claim not confirmed: r is the record the claim was to
// replace (the dead node's, with the will), epoch the claim's; while the
// record is still r, it is read again until the claim may no longer
// apply (until), after which the scans claim it again.
type unsureWill struct {
	r     ownerScan
	epoch uint64
	until time.Time
}

func (u *unsureWills) note(r ownerScan, epoch uint64, until time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.m == nil {
		u.m = map[string]unsureWill{}
	}
	u.m[r.id] = unsureWill{r, epoch, until}
}

func (u *unsureWills) drop(id string) {
	u.mu.Lock()
	delete(u.m, id)
	u.mu.Unlock()
}

func (u *unsureWills) all() []unsureWill {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make([]unsureWill, 0, len(u.m))
	for _, w := range u.m {
		out = append(out, w)
	}
	return out
}

// settleUnsureWills reads the record of each unsure will (unsureWills)
// and publishes the will if this node's claim replaced it; the janitor
// calls it on every tick while there are any. Claims of an id on this
// node are one at a time (lockClaim), so the record tells:
//   - this node at the claim's epoch, and no session here for the id: the
//     claim applied; the will is due and nobody else has it. With a
//     session here, a CONNECT here replaced the dead node's record at
//     that epoch instead, and published the will it removed
//     (publishReplacedWill);
//   - this node at a later epoch: a CONNECT here replaced the claim's
//     record, which held no will;
//   - the dead node's record, unchanged: not applied (yet); looked at
//     until the claim can no longer apply, then left to the scans;
//   - another node at the claim's epoch: its claim replaced the dead
//     node's record, and publishes the will;
//   - another node at a later epoch: its claim replaced a newer record,
//     this node's claim most likely (two claims would have had to come
//     between): the will is published, rather than maybe lost.
func (s *sessions) settleUnsureWills() {
	us := s.unsure.all()
	if len(us) == 0 {
		return
	}
	// One bound for the tick's reads, adoptParallel at a time: a dead
	// node's many claims may have timed out together, and the janitor
	// must not stall a read's bound per will. What is not read in time
	// is read at the next tick.
	ctx, cancel := context.WithTimeout(s.n.ctx, followAttempt)
	defer cancel()
	var wg sync.WaitGroup
	sem := make(chan struct{}, adoptParallel)
	for _, u := range us {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			s.settleUnsureWill(ctx, u)
		}()
	}
	wg.Wait()
}

func (s *sessions) settleUnsureWill(ctx context.Context, u unsureWill) {
	owner, epoch, _, rev, err := s.n.own.readWill(ctx, ownerKey(u.r.id))
	if err != nil {
		s.n.log.Debug("cluster: record of an unconfirmed will claim not read yet", "client_id", u.r.id, "err", err)
		return
	}
	mine := owner == s.n.cfg.Node
	switch {
	case rev == u.r.rev:
		if time.Now().After(u.until) {
			s.unsure.drop(u.r.id)
		}
		return
	case rev == 0 || epoch < u.epoch:
		s.unsure.drop(u.r.id)
		return
	case epoch == u.epoch && (!mine || s.n.srv.HasSession(u.r.id)):
		s.unsure.drop(u.r.id)
		return
	}
	s.unsure.drop(u.r.id)
	s.n.log.Info("will of a clean session of a silent node adopted", "client_id", u.r.id, "from", u.r.owner,
		"epoch", u.epoch, "topic", u.r.will.Topic, "confirmed", "by reading the record again", "owner_now", owner, "epoch_now", epoch)
	s.n.srv.PublishOrphanWill(u.r.will)
}
