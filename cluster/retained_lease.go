package cluster

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Proving the retained stream's leader current before a read.
//
// A read (sync) asks the stream's leader for the stream's last message and
// waits until this node applied it. A leader cut off from the other
// replicas still answers, from what it has, until it notices it lost its
// quorum (nats-server's lostQuorumInterval: 10 s, checked every 10 s),
// while the other replicas may have elected a new leader after 4 s and
// committed newer writes: a read on the cut-off side then returned a value
// older than one already acknowledged (TestReproRetainedCutOffLeaderRead).
// NATS has no quorum read (Raft's ReadIndex), so sync proves the answer
// current one of two ways:
//
//   - A lease, free on the read path: every leaseRenew this node asks the
//     stream's leader for its cluster info (one small request per node, in
//     the background, while reads come: see renewIfQuiet). When the leader heard from every other replica
//     within the last maxActive, no replica can start an election before
//     raftMinElection after that: a follower campaigns only once its
//     election timer (at least 4 s, reset by each append or heartbeat of
//     the leader) has run out, and no new leader exists without a
//     candidate. Until then, whoever answers as the stream's leader is the
//     current one. An answer received before the lease ends is used as is.
//   - Without a lease (a replica silent for longer, as while a node is
//     down, or this node cut off from the leader), a read marker: an
//     append to this node's marker subject, which only a leader with a
//     quorum can commit. Once this node has applied it, it has applied
//     every write committed before it, so every write acknowledged before
//     the read began. That costs one replicated write per read, and a
//     read on a node that cannot reach a quorum is refused (SUBACK 0x80)
//     instead of answered from a deposed leader.
//
// A follower votes for any candidate with a newer term (nats-server has
// no pre-vote nor leader stickiness), so the lease must cover every other
// replica, not a quorum: one that does not hear the leader could campaign
// and win with the vote of one that still does.

const (
	// raftMinElection is nats-server's minimum election timeout
	// (raft.go minElectionTimeoutDefault): a follower that heard from its
	// leader does not campaign for at least this long.
	raftMinElection = 4 * time.Second
	// leaseMargin covers what the leader's "last seen" does not: the
	// follower reset its timer before its answer reached the leader (one
	// network delay), clock rate differences, and scheduling.
	leaseMargin = time.Second
	// maxActive is the longest silence of a replica that still gives a
	// lease: an idle leader sends heartbeats every second and they can be
	// nearly two seconds apart (raft.go).
	maxActive = 2500 * time.Millisecond
	// leaseRenew is how often the lease is renewed.
	leaseRenew = 500 * time.Millisecond
	// leaseIdle is how long after a read the lease is still renewed in
	// the background; after it, the first read renews it itself.
	leaseIdle = 10 * time.Second
	// leaseAsk bounds the renewal a read makes itself: a leader that does
	// not answer within it (paused, cut off) gives no lease, and the read
	// takes a marker.
	leaseAsk = time.Second
	// retMarkPrefix is the subject of the read markers, one per node (the
	// stream keeps one message per subject), inside the stream's subjects
	// so that every node's consumer delivers them (and skips them). No
	// topic maps to it: an escaped level never has '%' without two hex
	// digits after it (subject.go).
	retMarkPrefix = retPrefix + ".%mark"
	// markTTL is how long a node's last read marker stays in the stream
	// (at most one per node: one message per subject), long enough for
	// the node's consumer to deliver it under load.
	markTTL = 10 * time.Second
)

// leaseUntil returns when the current lease ends (the zero time: none).
func (r *retained) leaseUntil() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lease
}

// renewLeases renews the lease every leaseRenew, while a read came within
// leaseIdle, until the node stops.
//
// Renewing it always cost an idle cluster 14-18 % of its CPU (every node's
// request decoded by all three servers, twice a second: cpu29 in
// bench/jepsen/RESULTS.md), and most of the time no read needs it. A read
// after a quiet spell renews it itself (renewIfQuiet): one round trip,
// still no replicated write.
func (r *retained) renewLeases() {
	defer r.n.wg.Done()
	t := time.NewTicker(leaseRenew)
	defer t.Stop()
	for {
		select {
		case <-r.n.ctx.Done():
			return
		case <-t.C:
		}
		renew := time.Since(time.Unix(0, r.lastRead.Load())) <= leaseIdle
		r.renewing.Store(renew)
		if !renew {
			continue
		}
		ctx, cancel := context.WithTimeout(r.n.ctx, leaseRenew)
		r.renewLease(ctx)
		cancel()
	}
}

// renewIfQuiet notes a read beginning and, if renewLeases is not renewing
// the lease (no read within leaseIdle before its last tick) and the lease
// has run out, renews it before the read, within leaseAsk: the read is
// then answered under a lease, not by a marker, as if the lease had been
// renewed all along (TestClusterRetainedConcurrentWriters: each node's
// first read). The lease is the same either way: counted from before the
// request, from the leader's answer (leaseFrom). Reads that come together
// renew it once (leaseMu, leaseAsked). While renewLeases renews, a lapsed
// lease means a replica is silent or the leader does not answer, and the
// read goes straight to the marker, as it always did.
func (r *retained) renewIfQuiet(ctx context.Context) {
	r.lastRead.Store(time.Now().UnixNano())
	if r.renewing.Load() || !time.Now().After(r.leaseUntil()) {
		return
	}
	began := time.Now()
	r.leaseMu.Lock()
	defer r.leaseMu.Unlock()
	if !time.Now().After(r.leaseUntil()) || r.leaseAsked.After(began) {
		// Renewed, or tried (a leader that does not answer), by a read
		// that came at the same time: reads queued behind a leader that
		// does not answer wait for one try, not one each.
		return
	}
	ctx, cancel := context.WithTimeout(ctx, leaseAsk)
	defer cancel()
	r.renewLease(ctx)
	r.leaseAsked = time.Now()
}

// renewLease asks the stream's leader how recently it heard from each
// other replica and extends the lease if every one is recent. A failed
// request leaves the lease to run out.
func (r *retained) renewLease(ctx context.Context) {
	asked := time.Now()
	info, err := r.stream.Info(ctx)
	if err != nil {
		r.n.log.Debug("cluster: retained stream lease not renewed", "err", err)
		return
	}
	until, ok := leaseFrom(asked, info.Cluster)
	if !ok {
		return
	}
	r.mu.Lock()
	if until.After(r.lease) {
		r.lease = until
	}
	r.mu.Unlock()
}

// leaseFrom returns the end of the lease that the leader's cluster info ci,
// asked for at asked, gives, or false if it gives none: no leader, or a
// replica not heard from within maxActive (or never: nats-server reports
// a replica it has never heard from as active 0 ago).
func leaseFrom(asked time.Time, ci *jetstream.ClusterInfo) (time.Time, bool) {
	if ci == nil {
		return asked.Add(raftMinElection - leaseMargin), true // one server: no other leader
	}
	if ci.Leader == "" {
		return time.Time{}, false
	}
	var oldest time.Duration
	for _, p := range ci.Replicas {
		if p.Offline || p.Active <= 0 || p.Active > maxActive {
			return time.Time{}, false
		}
		oldest = max(oldest, p.Active)
	}
	return asked.Add(raftMinElection - leaseMargin - oldest), true
}

// syncByMarker is sync without a lease: it appends a read marker and waits
// until this node has applied it (and its consumer has read the stream
// whole), all within ctx.
//
// The marker is appended again every followAttempt until one append is
// acknowledged: an append that reached a leader paused or cut off after it
// was elected is never answered (nats.go tries a publish again only when
// nobody listens), and waiting for it alone held a SUBACK for the whole
// forward timeout although the other replicas had elected a leader
// seconds after the pause. The earlier appends keep waiting too, since a
// slow leader's answer is as good as a new one's; appending the marker
// twice does no harm (the stream keeps the last one of its subject).
func (r *retained) syncByMarker(ctx context.Context) error {
	seq, err := firstOf(ctx, followAttempt, func(ctx context.Context) (uint64, error) {
		ack, err := r.js.Publish(ctx, retMarkPrefix+"."+r.n.cfg.Node, nil,
			jetstream.WithMsgTTL(min(r.n.cfg.TombstoneTTL, markTTL)))
		if err != nil {
			return 0, err
		}
		return ack.Sequence, nil
	})
	if err != nil {
		return fmt.Errorf("retained stream: read marker not committed (no quorum?): %w", err)
	}
	r.n.log.Debug("cluster: retained read by marker", "seq", seq)
	_, err = r.waitApplied(ctx, seq, nil, true)
	return err
}

// isMark reports whether subject is a read marker's.
func isMark(subject string) bool {
	return len(subject) > len(retMarkPrefix) && subject[:len(retMarkPrefix)] == retMarkPrefix && subject[len(retMarkPrefix)] == '.'
}
