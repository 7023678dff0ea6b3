package cluster

import (
	"context"
	"errors"
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
// When the connection ends on its node, alive, the node publishes or
// drops the will itself (the broker, as on one node) and then rewrites
// the record without it (WillDone), if the record is still the one the
// CONNECT wrote (same owner, same epoch: a compare-and-set on its
// revision). A takeover needs nothing: the new claim replaces the record.
//
// When the node dies, the janitor (janitor.go) finds the record naming a
// silent node; the chosen survivor claims it as it claims a persistent
// session (compare-and-set, epoch + 1, so that one survivor wins, and the
// dead node is fenced should it come back) and publishes the will at once:
// a session with expiry 0 ended with its connection, and a will is due
// when the will delay has passed or the session ended, whichever comes
// first [MQTT-3.1.3-9]. A client that reconnected anywhere before the
// janitor came replaced the record: no will is published for it.
//
// A node killed and restarted within adopt_after is heard from again
// before any survivor adopts its records: its own janitor's first scan
// after start publishes the recorded wills naming it of connections it no
// longer has (leftover), the same way.
//
// A will twice is preferred to none: the node publishes the will of an
// ended connection before it clears the record, so a node dying between
// the two leaves a will that the janitor publishes again.

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
	token, epoch, err := n.own.claimWill(ctx, clientID, will)
	if token != 0 {
		n.own.mu.Lock()
		n.own.wills[token] = epoch
		n.own.mu.Unlock()
	}
	if err != nil {
		n.counters.claimsFailed.Add(1)
		return token, err
	}
	n.counters.claims.Add(1)
	return token, nil
}

// WillDone implements broker.CleanWillKeeper: the will that the claim
// writing revision token recorded for clientID was published or dropped
// here. The record is rewritten without it, on a goroutine of its own
// (the caller is a closing connection), unless it changed since (another
// claim): one compare-and-set on that revision, no read.
func (n *Node) WillDone(clientID string, token uint64) {
	if token == 0 {
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		err := n.own.forgetWill(clientID, token)
		n.own.mu.Lock()
		delete(n.own.wills, token)
		n.own.mu.Unlock()
		if err != nil {
			// The record keeps the will: should this node die before
			// the client connects again, a survivor publishes it once
			// more (see above).
			n.log.Warn("cluster: will of an ended connection still recorded", "client_id", clientID, "err", err)
		}
	}()
}

// forgetWill rewrites id's owner record, at revision rev, without its
// will; a record changed since is left alone. The epoch stays: the
// record is the same claim's.
func (o *owners) forgetWill(id string, rev uint64) error {
	kv := o.bucket()
	if kv == nil {
		return errNotReady
	}
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, time.Second) {
		ctx, cancel := context.WithTimeout(o.n.ctx, o.n.cfg.ForwardTimeout)
		err := o.forgetWillOnce(ctx, kv, id, rev)
		cancel()
		if err == nil || o.n.ctx.Err() != nil {
			return err
		}
		if backoff == time.Second {
			return err // tried for a few seconds: no quorum
		}
		select {
		case <-o.n.ctx.Done():
			return err
		case <-time.After(backoff):
		}
	}
}

func (o *owners) forgetWillOnce(ctx context.Context, kv jetstream.KeyValue, id string, rev uint64) error {
	o.mu.Lock()
	epoch := o.wills[rev]
	o.mu.Unlock()
	_, err := kv.Update(ctx, ownerKey(id), encodeOwner(o.n.cfg.Node, epoch), rev)
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return nil // claimed meanwhile: the record is no longer this one
	}
	if err == nil {
		o.n.log.Debug("cluster: will of an ended connection forgotten", "client_id", id, "epoch", epoch)
	}
	return err
}

// adoptCleanWills claims the records of rs, each naming a silent node
// (or this node, before it restarted: leftover) and holding a will, and
// publishes the wills: see above. A record that changed since the scan
// read it (the client reconnected, or another survivor won) fails its
// compare-and-set: no will for it here.
func (s *sessions) adoptCleanWills(ctx context.Context, rs []ownerScan) error {
	return s.eachParallel(rs, func(r ownerScan) error {
		epoch, ok, err := s.claimOrphan(ctx, r)
		if !ok || err != nil {
			return err
		}
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
