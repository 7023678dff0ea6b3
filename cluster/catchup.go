package cluster

import (
	"sync"
	"time"
)

// A session that may still get messages held for it elsewhere after
// publishers already forward newer ones to it here catches up first
// (broker.Server.CatchUp): nothing new goes to its client, what is
// forwarded to it is queued, and what was held for it goes ahead of that
// in its queue (the broker orders by each message's place: originKey), until
// the held subjects were read for it once more. Two such sessions:
//
//   - one taken from the stream (heldahead.go adoptHeld): what was held
//     after its read ahead, until its followers' first complete reads
//     that began after the adoption;
//   - a restarted node's restored sessions once settled (held.go
//     onSettled): what was held for this node after the read that
//     settled them, until this node's own follower read its held subject
//     to the end, heldPoll or more after the settle (followOwnHeldOnce).
//
// Either way at most ForwardTimeout (a node back from a silence allows
// more: returnElection): then sending starts anyway, logged.

// catchUp has id's session, just put in the server or settled (under the
// gate's write side, so that nothing forwarded reaches it first), catch up
// (above), for at most bound, and returns what ends the catch-up: done,
// which also calls then (after the catch-up ended, whether by done or by
// the bound).
// unread, if not nil, names the nodes whose held subject was still not
// read for id, for the log when the bound cuts the catch-up: which
// follower was slow is what such a log is read for.
func (n *Node) catchUp(id string, bound time.Duration, then func(), unread func() []string) (done func()) {
	end := n.srv.CatchUp(id)
	if end == nil {
		return then
	}
	n.catching.Add(1)
	var once sync.Once
	start := time.Now()
	stop := func(cut bool) {
		once.Do(func() {
			if cut {
				var from []string
				if unread != nil {
					from = unread()
				}
				n.log.Warn("cluster: session sends before what was held for it was read: catching up took too long",
					"client_id", id, "bound", bound, "unread_from", from)
			} else {
				n.log.Info("cluster: session caught up with what was held for it", "client_id", id,
					"after", time.Since(start))
			}
			end()
			n.catching.Add(-1)
		})
	}
	t := time.AfterFunc(bound, func() { stop(true) })
	return func() {
		t.Stop()
		stop(false)
		then()
	}
}

// catchUpAll has each of ids catch up (catchUp) for at most bound and
// returns what ends them all; nil for no ids.
func (n *Node) catchUpAll(ids []string, bound time.Duration) (done func()) {
	if len(ids) == 0 {
		return nil
	}
	// What they wait for is this node's own held subject.
	own := func() []string { return []string{n.cfg.Node} }
	dones := make([]func(), 0, len(ids))
	for _, id := range ids {
		dones = append(dones, n.catchUp(id, bound, func() {}, own))
	}
	return func() {
		for _, d := range dones {
			d()
		}
	}
}
