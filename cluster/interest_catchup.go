package cluster

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// catchUpBound is how long a starting node waits for the interest of peers
// it has no route to, or whose snapshot it could not fetch, before it
// serves MQTT anyway. A reachable peer is caught up well within it: its
// routes form at once (this node dials every peer at start), it heartbeats
// every heartbeatEvery, and one snapshot fetch takes at most
// snapshotTimeout. A peer not heard from for deadAfter is what the rest of
// the protocol calls dead (expireLoop), so waiting longer for it would
// only keep this node unavailable for a node the cluster has given up on;
// waiting less could let a live but slow peer's subscribers miss what this
// node acknowledges.
const catchUpBound = deadAfter + snapshotTimeout

// catchUpEvery is how often the routes and snapshots are checked while a
// node catches up.
const catchUpEvery = 50 * time.Millisecond

// errCatchingUp: the node does not have the other nodes' interest yet, so
// a publish it acknowledged could match nobody on them.
var errCatchingUp = errors.New("cluster: node is still fetching the other nodes' subscriptions")

// catchUp is whether this node has every reachable peer's interest.
type catchUp struct {
	done atomic.Bool
	once sync.Once
	ch   chan struct{} // closed when done; made by chanOf
}

// ready reports nil once caught up, errCatchingUp before.
func (c *catchUp) ready() error {
	if c.done.Load() {
		return nil
	}
	return errCatchingUp
}

func (c *catchUp) chanOf() chan struct{} {
	c.once.Do(func() { c.ch = make(chan struct{}) })
	return c.ch
}

// markDone records that the node caught up (or gave up waiting).
func (c *catchUp) markDone() {
	if c.done.CompareAndSwap(false, true) {
		close(c.chanOf())
	}
}

// wait is ready after waiting for the catch-up until ctx ends: a CONNECT
// that arrives while a node starts waits the fraction of a second the
// catch-up takes instead of being closed (a client tries again, but the
// bridges' in-process clients at roost serve's start did not, and the
// node failed to start).
func (c *catchUp) wait(ctx context.Context) error {
	if c.done.Load() {
		return nil
	}
	select {
	case <-c.chanOf():
		return nil
	case <-ctx.Done():
		return errCatchingUp
	}
}

// syncedAll reports whether every node in routed has a synced snapshot.
func (r *remoteInterest) syncedAll(routed map[string]bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for name := range routed {
		if p := r.peers[name]; p == nil || !p.synced {
			return false
		}
	}
	return true
}

// unsynced returns the routed nodes whose interest is missing, sorted, for
// the log.
func (r *remoteInterest) unsynced(routed map[string]bool) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for name := range routed {
		if p := r.peers[name]; p == nil || !p.synced {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// catchUpLoop marks the node caught up once it has a route to as many
// nodes as it has peers and the interest snapshot of each, or after
// catchUpBound, whichever is first. Until then Claim refuses CONNECTs
// (closed without a CONNACK) and Forward fails QoS 1/2 publishes, so that
// no publish is acknowledged that a subscriber on another node should
// have had: a node restarted after kill -9 otherwise served MQTT about
// 1.6 s before it knew what the others subscribed to.
func (n *Node) catchUpLoop() {
	defer n.wg.Done()
	start := time.Now()
	t := time.NewTicker(catchUpEvery)
	defer t.Stop()
	for {
		routed, err := n.eng.routedNodes()
		if err == nil && len(routed) >= len(n.cfg.Peers) && n.remote.syncedAll(routed) {
			n.catch.markDone()
			n.log.Info("cluster interest caught up", "peers", len(routed), "after", time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Since(start) >= catchUpBound {
			n.catch.markDone()
			n.log.Warn("cluster interest incomplete: serving without the subscriptions of peers not heard from yet",
				"peers", len(routed)-len(n.remote.unsynced(routed)), "configured", len(n.cfg.Peers),
				"unsynced", n.remote.unsynced(routed), "after", catchUpBound)
			return
		}
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
	}
}
