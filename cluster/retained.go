package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/roost-mqtt/roost/broker"
)

// Retained messages are kept by the cluster: a stream with Config.Replicas
// copies and at most one message per subject, the subject being the topic
// (escaped, see subject.go) under retPrefix. A retained publish on any
// node (an empty one to clear) is appended there; every node follows the
// stream from its start with a consumer of its own (the last message of
// each subject first, then what comes; made again when it is lost with a
// node) and applies each message to its own retained tree, its own
// included, so every node applies the same changes
// in the same order and they all end with the same message per topic. A
// node's own retained publishes reach its tree that way only, never ahead
// of the stream (the broker leaves its tree alone for a RetainedSyncer):
// an append the stream never confirmed (the publisher's outcome unknown)
// would otherwise be served, then taken back. A new subscription is
// answered from the local tree once sync has brought it up to date.
//
// A cleared topic leaves an empty message (a tombstone) in the stream, so
// that nodes following the stream learn of the clearing; it expires after
// Config.TombstoneTTL (a JetStream per-message TTL), and so does a message
// with a Message Expiry when it expires, so the stream holds the topics
// that have a retained message and the clearings of the last TTL, no more.
// A node that starts again after a tombstone expired would still hold the
// cleared message from its own store, and so would a node that lost its
// consumer (with the node it lived on) for longer than the TTL; so when a
// node's consumer has delivered the whole stream, it clears every retained
// message it had when the consumer was made that the stream did not
// mention and nothing has replaced since (reconcile).
//
// A QoS 1/2 retained publish is appended on the condition that the topic's
// last message is still the one this node last applied (JetStream's
// expected last sequence per subject); if another node wrote the topic
// meanwhile, the append is retried with the stream's current last
// sequence until the publish's deadline. The condition is a fence, not a
// lock: an append the publisher gave up on (no answer within
// forward_timeout: a node cut off from the stream's leader) may still
// reach the stream later, buffered on a route, and must then not overwrite
// what was written and acknowledged since. QoS 0 retained publishes are
// appended without a condition: no one waits to retry them.

const (
	// retainedPullExpiry is the retained consumer's pull expiry; its
	// heartbeats come every half of it.
	retainedPullExpiry = 2 * time.Second
	retStream          = "ROOST_RETAIN"
	retPrefix          = subjPrefix + ".ret"
)

// retained is a node's side of the retained stream.
type retained struct {
	n      *Node
	js     jetstream.JetStream
	ready  atomic.Bool
	caught atomic.Bool // logged "caught up" once
	stream jetstream.Stream
	// restart asks follow for a new consumer, with the reason; made by
	// the first open.
	restart chan error

	// applyMu keeps the applying of messages in stream order when a
	// replaced consumer still delivers while its successor begins.
	applyMu sync.Mutex
	mu      sync.Mutex
	// gen is the generation of the current consumer: messages and errors
	// of earlier ones are ignored.
	gen uint64
	// delivered is the consumer sequence of the current consumer's last
	// message.
	delivered uint64
	// seqs holds the stream sequence of the last message applied here per
	// subject: the condition of this node's next append to it.
	seqs map[string]uint64
	// stale holds the retained messages this node had when its current
	// consumer was made, less those the stream has mentioned since; nil
	// once that consumer has delivered the whole stream.
	stale map[string]*broker.Message
	// whole: the current consumer has delivered the whole stream and
	// reconcile has run (sync waits for it).
	whole bool
	// applied is the stream sequence of the last message applied here;
	// moved is closed, and replaced, whenever it grows (sync waits on it).
	applied uint64
	moved   chan struct{}
	// lease: until then, the stream's leader answering a read is the
	// current one (retained_lease.go); renewed in the background while
	// reads come, and by a read that finds it lapsed after a quiet spell.
	lease time.Time
	// lastRead is when the last sync began (UnixNano; 0: none yet): the
	// lease is renewed in the background only for leaseIdle after it;
	// renewing says whether renewLeases renewed at its last tick.
	lastRead atomic.Int64
	renewing atomic.Bool
	// leaseMu makes reads after a quiet spell renew the lease once
	// (renewIfQuiet); leaseAsked is when such a renewal ended.
	leaseMu    sync.Mutex
	leaseAsked time.Time
}

// open creates or opens the stream and starts following it. It returns an
// error while JetStream has no quorum; the caller retries.
func (r *retained) open(ctx context.Context) error {
	stream, err := createOrUpdateStream(ctx, r.js, jetstream.StreamConfig{
		Name: retStream, Description: "Roost retained messages", Subjects: []string{retPrefix + ".>"},
		MaxMsgsPerSubject: 1, Storage: jetstream.FileStorage, Replicas: r.n.cfg.Replicas,
		MaxMsgSize: -1, Discard: jetstream.DiscardOld,
		// Tombstones and expired messages leave the stream by TTL.
		AllowMsgTTL: true,
	})
	if err != nil {
		return fmt.Errorf("retained stream: %w", err)
	}
	if r.restart == nil {
		r.restart = make(chan error, 1)
	}
	cc, err := r.consume(ctx)
	if err != nil {
		return err
	}
	r.stream = stream
	r.ready.Store(true)
	r.n.wg.Add(2) // the caller, openAssets, is counted in n.wg until it returns
	go r.follow(cc)
	go r.renewLeases()
	return nil
}

// consume makes a consumer of the stream that delivers the last message of
// each subject, then what comes, and consumes it. Until it has delivered
// them all, the retained messages this node holds are candidates for
// reconcile: the stream may have forgotten their clearing.
//
// The consumer lives on one node (the stream leader's when it is made,
// see leaderConsumer): when that node dies, this node learns of it by missed heartbeats and
// follow makes another. nats.go's ordered consumer does the same, but
// each of its attempts waits 10 s for an answer, and while the cluster
// elects a new meta leader after losing the old one a request gets none:
// a node then applied no retained change for 10 to 20 s after a node
// loss. Here each attempt is bounded by followAttempt.
//
// A new consumer reads the whole stream again rather than resume after
// the last message applied: a clearing made while this node followed no
// consumer leaves the stream when its tombstone expires, perhaps before
// the new consumer exists (the test's TTL is 2 s, a meta leader election
// takes seconds), and only a full read with a reconcile puts that right.
// It costs one message per retained topic, once per lost consumer.
func (r *retained) consume(ctx context.Context) (jetstream.ConsumeContext, error) {
	r.snapshotLocal()
	r.mu.Lock()
	r.gen++
	gen := r.gen
	r.delivered = 0
	r.mu.Unlock()
	cfg := jetstream.ConsumerConfig{
		Description:   "Roost retained follower of " + r.n.cfg.Node,
		DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy,
		AckPolicy:     jetstream.AckNonePolicy, FilterSubject: retPrefix + ".>",
		Replicas: 1, MemoryStorage: true,
		// A consumer left behind (its node died or replaced it) goes.
		InactiveThreshold: followInactive,
	}
	ctx, cancel := context.WithTimeout(ctx, followAttempt)
	defer cancel()
	cons, err := leaderConsumer(ctx, r.js, retStream, cfg)
	if err != nil {
		return nil, fmt.Errorf("retained consumer: %w", err)
	}
	// Short pulls (heartbeats every second, where the default is 5 s)
	// make a lost consumer noticed within about 2 s.
	cc, err := cons.Consume(func(m jetstream.Msg) { r.deliver(gen, m) },
		jetstream.PullExpiry(retainedPullExpiry),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) { r.consumeErr(gen, err) }))
	if err != nil {
		return nil, fmt.Errorf("retained consumer: %w", err)
	}
	info := cons.CachedInfo()
	r.n.log.Debug("cluster: following the retained stream", "consumer", info.Name, "messages", info.NumPending)
	if info.NumPending == 0 {
		r.noteCaughtUp(gen) // an empty stream: no message will say so
	}
	return cc, nil
}

const (
	// followAttempt bounds one attempt to make a consumer: before the
	// cluster has a meta leader a request gets no answer at all.
	followAttempt = 2 * time.Second
	// followInactive is how long a consumer nobody pulls from stays.
	followInactive = time.Minute
)

// follow keeps this node following the stream until it stops: when the
// consumer cc is lost (or a message went missing on the way), it makes
// another, retrying until it has one.
func (r *retained) follow(cc jetstream.ConsumeContext) {
	defer r.n.wg.Done()
	for {
		var why error
		select {
		case <-r.n.ctx.Done():
			cc.Stop()
			return
		case why = <-r.restart:
		}
		cc.Stop()
		r.n.log.Info("cluster: following the retained stream again", "why", why)
		for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, time.Second) {
			var err error
			if cc, err = r.consume(r.n.ctx); err == nil {
				break
			}
			r.n.log.Debug("cluster: retained consumer not made; retrying", "err", err, "backoff", backoff)
			select {
			case <-r.n.ctx.Done():
				return
			case <-time.After(backoff):
			}
		}
	}
}

// consumeErr is the consumer's error handler: the errors after which it
// delivers nothing more make follow start another.
func (r *retained) consumeErr(gen uint64, err error) {
	switch {
	case errors.Is(err, jetstream.ErrNoHeartbeat), errors.Is(err, jetstream.ErrConsumerDeleted),
		errors.Is(err, jetstream.ErrConsumerNotFound), errors.Is(err, nats.ErrNoResponders):
		r.restartFollow(gen, err)
	default:
		r.n.log.Debug("cluster: retained consumer", "err", err)
	}
}

// restartFollow asks follow for a new consumer in place of generation gen's
// (once: later reports about the same one are ignored).
func (r *retained) restartFollow(gen uint64, why error) {
	r.mu.Lock()
	if gen != r.gen {
		r.mu.Unlock()
		return
	}
	r.gen++ // what the old consumer still delivers is ignored
	// Until the next consumer has read the stream, a clearing whose
	// tombstone expired meanwhile would go unnoticed (sync).
	r.whole = false
	r.mu.Unlock()
	select {
	case r.restart <- why:
	default:
	}
}

// deliver applies a message of consumer generation gen, in order: a
// consumer sequence that skips one means a message was lost on the way
// (the consumer has no acknowledgements), and a new consumer is made.
func (r *retained) deliver(gen uint64, m jetstream.Msg) {
	meta, err := m.Metadata()
	if err != nil {
		r.n.log.Warn("cluster: retained message without metadata", "subject", m.Subject(), "err", err)
		return
	}
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	r.mu.Lock()
	switch {
	case gen != r.gen:
		r.mu.Unlock()
		return
	case meta.Sequence.Consumer != r.delivered+1:
		r.mu.Unlock()
		r.restartFollow(gen, fmt.Errorf("delivery %d came after %d", meta.Sequence.Consumer, r.delivered))
		return
	}
	r.delivered = meta.Sequence.Consumer
	r.mu.Unlock()
	r.apply(gen, m, meta)
}

// apply applies one message of consumer generation gen to this node's
// retained tree.
func (r *retained) apply(gen uint64, m jetstream.Msg, meta *jetstream.MsgMetadata) {
	defer r.advance(meta.Sequence.Stream)
	if isMark(m.Subject()) {
		// A read marker (retained_lease.go): nothing to apply, but
		// its sequence counts as applied.
		if meta.NumPending == 0 {
			r.noteCaughtUp(gen)
		}
		return
	}
	rm, err := decodeForward(m.Data())
	if err != nil {
		r.n.log.Warn("cluster: bad message in the retained stream", "subject", m.Subject(), "err", err)
		return
	}
	if rm.ExpiresIn > 0 {
		// The expiry counts from when the stream took the message,
		// which matters for a node catching up much later.
		rm.ExpiresIn -= time.Since(meta.Timestamp)
		if rm.ExpiresIn <= 0 {
			rm.Payload = nil // expired: clear the topic
			rm.ExpiresIn = 0
		}
	}
	r.mu.Lock()
	if r.stale != nil {
		delete(r.stale, rm.Topic)
	}
	r.mu.Unlock()
	r.n.srv.ApplyRetained(rm)
	r.mu.Lock()
	if r.seqs == nil {
		r.seqs = make(map[string]uint64)
	}
	r.seqs[m.Subject()] = max(r.seqs[m.Subject()], meta.Sequence.Stream)
	r.mu.Unlock()
	if meta.NumPending == 0 {
		r.noteCaughtUp(gen)
	}
}

// advance notes that the stream's messages up to seq are applied here.
func (r *retained) advance(seq uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if seq <= r.applied {
		return
	}
	r.applied = seq
	r.wakeLocked()
}

// wakeLocked wakes the waiters of waitApplied; r.mu is held.
func (r *retained) wakeLocked() {
	if r.moved != nil {
		close(r.moved)
		r.moved = nil
	}
}

// sync returns once this node has applied every message the stream held
// when it was called: the last one, which the stream's leader names
// (the last existing message of any topic), if the answer came while
// this node holds a lease on the leader's being current; without one, a
// read marker it appends (retained_lease.go). A write acknowledged to its
// publisher is in the stream, so a read after sync sees it or a newer
// value, on any node. It also waits until the current consumer has read
// the whole stream once and reconcile has run: until then the tree may
// hold a message whose clearing left the stream (its tombstone expired)
// while this node was down or followed no consumer, and applied, which
// counts what earlier consumers applied too, does not say so. It costs
// one request to the stream's leader, and one more every syncRecheck
// while this node lags: a message that leaves
// the stream before this node got it (a tombstone's or an expiry's TTL)
// is never delivered, and the stream's new last message is waited for
// instead.
func (r *retained) sync(ctx context.Context) error {
	if !r.ready.Load() {
		return errNotReady
	}
	r.renewIfQuiet(ctx)
	recheck := time.NewTicker(syncRecheck)
	defer recheck.Stop()
	for {
		if time.Now().After(r.leaseUntil()) {
			return r.syncByMarker(ctx)
		}
		// One try is bounded: a leader paused after it renewed the lease
		// never answers, and the lease, which it no longer renews, runs
		// out meanwhile, so the next round reads by marker. A current
		// leader answers well within the bound: its lease renewals,
		// bounded by leaseRenew, succeeded.
		actx, cancel := context.WithTimeout(ctx, followAttempt)
		_, last, err := leaderGet(actx, r.n.eng.nc, retStream, retPrefix+".>")
		cancel()
		if err != nil && ctx.Err() == nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)) {
			continue
		}
		if err != nil {
			return fmt.Errorf("retained stream: last message: %w", err)
		}
		if time.Now().After(r.leaseUntil()) {
			// The answer may have come from a leader deposed meanwhile.
			return r.syncByMarker(ctx)
		}
		// last is 0 for an empty stream: then only reconcile is waited for.
		if done, err := r.waitApplied(ctx, last, recheck.C, true); done || err != nil {
			return err
		}
	}
}

// syncRecheck is how often sync asks the stream's leader again while
// this node has not applied the message it named.
const syncRecheck = 250 * time.Millisecond

// waitApplied waits until the stream's messages up to seq are applied
// here (true), and with reconciled until the current consumer has also
// caught up (reconcile), or until recheck ticks (false).
func (r *retained) waitApplied(ctx context.Context, seq uint64, recheck <-chan time.Time, reconciled bool) (bool, error) {
	for {
		r.mu.Lock()
		applied, caught := r.applied, r.whole
		if r.moved == nil {
			r.moved = make(chan struct{})
		}
		moved := r.moved
		r.mu.Unlock()
		if applied >= seq && (caught || !reconciled) {
			return true, nil
		}
		select {
		case <-moved:
		case <-recheck:
			return false, nil
		case <-ctx.Done():
			if applied >= seq {
				return false, fmt.Errorf("retained stream: not read whole since the node's consumer was made: %w", ctx.Err())
			}
			return false, fmt.Errorf("retained stream: message %d not applied here yet (at %d): %w", seq, applied, ctx.Err())
		}
	}
}

// SyncRetained implements broker.RetainedSyncer (see retained.sync),
// bounded by the forward timeout. A SUBACK waits for it: one that waited
// slowWait or more is logged.
func (n *Node) SyncRetained() error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.ForwardTimeout)
	defer cancel()
	err := n.ret.sync(ctx)
	if took := time.Since(start); took >= slowWait {
		n.log.Info("cluster: a read of retained messages waited for the retained stream",
			"took", took.Round(time.Millisecond), "err", err)
	}
	return err
}

// snapshotLocal notes the retained messages this node has before a
// consumer reads the stream (from its own store at the start).
func (r *retained) snapshotLocal() {
	msgs, _ := r.n.srv.RetainedMessages("#", 0) // "#" is valid
	r.mu.Lock()
	r.whole = false
	r.stale = make(map[string]*broker.Message, len(msgs))
	for _, m := range msgs {
		r.stale[m.Topic] = m
	}
	r.mu.Unlock()
}

// noteCaughtUp: the current consumer has delivered the whole stream.
func (r *retained) noteCaughtUp(gen uint64) {
	r.reconcile(gen)
	if r.caught.CompareAndSwap(false, true) {
		r.n.log.Info("cluster retained messages caught up", "stream", retStream)
	}
}

// reconcile clears the retained messages this node had when its consumer
// (of generation gen) was made that the stream did not mention while it
// caught up, unless something replaced them since: their clearing was in
// the stream, and its tombstone expired. Once per consumer: stale is nil
// after. An earlier consumer still delivering leaves the current one's
// stale alone.
func (r *retained) reconcile(gen uint64) {
	r.mu.Lock()
	if gen != r.gen {
		r.mu.Unlock()
		return
	}
	stale := r.stale
	r.stale = nil
	r.mu.Unlock()
	cleared := 0
	for _, m := range stale {
		if r.n.srv.ClearRetainedIf(m) {
			cleared++
		}
	}
	// Only now may sync let reads through (waitApplied); not if a newer
	// consumer has begun meanwhile (its own reconcile will).
	r.mu.Lock()
	if gen == r.gen {
		r.whole = true
		r.wakeLocked()
	}
	r.mu.Unlock()
	if cleared > 0 {
		r.n.log.Info("cluster: cleared retained messages the cluster no longer has", "topics", cleared)
	}
}

// appendAsync adds a retained publish to the stream and returns the
// future of the stream's acknowledgement (replicated and synced). fenced
// makes the append conditional on the topic's last message being the one
// applied here; settle retries it on a conflict.
func (r *retained) appendAsync(msg *broker.Message, pub []byte, fenced bool) (jetstream.PubAckFuture, error) {
	if !r.ready.Load() {
		return nil, errNotReady
	}
	subj := TopicSubject(retPrefix, msg.Topic)
	opts := retainedTTL(msg, r.n.cfg.TombstoneTTL)
	if !fenced {
		return r.js.PublishAsync(subj, encodeForward(msg, nil, pub), opts...)
	}
	r.mu.Lock()
	seq := r.seqs[subj]
	r.mu.Unlock()
	opts = append(opts, jetstream.WithExpectLastSequencePerSubject(seq))
	return r.js.PublishAsync(subj, encodeForward(msg, nil, pub), opts...)
}

// retainedTTL is the stream TTL of a retained publish: a tombstone's, or
// its Message Expiry in whole seconds (JetStream's unit) rounded up, so it
// does not leave the stream before it expires; none otherwise.
func retainedTTL(msg *broker.Message, tombstone time.Duration) []jetstream.PublishOpt {
	switch exp := msg.Expires(); {
	case len(msg.Payload) == 0:
		return []jetstream.PublishOpt{jetstream.WithMsgTTL(tombstone)}
	case !exp.IsZero():
		return []jetstream.PublishOpt{jetstream.WithMsgTTL(max(time.Until(exp).Round(time.Second)+time.Second, time.Second))}
	}
	return nil
}

// settle waits for a fenced append's acknowledgement until ctx ends. On a
// conflict (another node wrote the topic after the last message this node
// applied) it appends again, conditional on the stream's current last
// message of the topic: the publish is newer than that one.
func (r *retained) settle(ctx context.Context, fut jetstream.PubAckFuture) error {
	_, err := r.settleAt(ctx, fut)
	return err
}

// settleAt is settle that also returns the stream sequence of the append.
func (r *retained) settleAt(ctx context.Context, fut jetstream.PubAckFuture) (uint64, error) {
	for {
		select {
		case ack := <-fut.Ok():
			return ack.Sequence, nil
		case err := <-fut.Err():
			if !isWrongLastSeq(err) {
				return 0, err
			}
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		m := fut.Msg()
		var seq uint64
		last, err := r.stream.GetLastMsgForSubject(ctx, m.Subject)
		switch {
		case err == nil:
			seq = last.Sequence
		case errors.Is(err, jetstream.ErrMsgNotFound):
		default:
			return 0, err
		}
		opts := []jetstream.PublishOpt{jetstream.WithExpectLastSequencePerSubject(seq)}
		if ttl, err := time.ParseDuration(m.Header.Get(jetstream.MsgTTLHeader)); err == nil && ttl > 0 {
			opts = append(opts, jetstream.WithMsgTTL(ttl)) // kept from the first append
		}
		fut, err = r.js.PublishAsync(m.Subject, m.Data, opts...)
		if err != nil {
			return 0, err
		}
	}
}

// isWrongLastSeq reports whether err is JetStream's answer to an append
// whose condition failed (replicated streams use the second code).
func isWrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// ClearRetained implements broker.RetainedClearer: a tombstone for topic
// in the stream (fenced, as a QoS 1/2 clearing is), which every node
// applies. It returns once this node has applied it too, so that the
// caller (the admin API) sees the topic cleared here: the node does not
// clear it ahead of the stream (broker.RetainedSyncer).
func (n *Node) ClearRetained(topic string) error {
	msg := &broker.Message{Topic: topic, Retain: true, QoS: 1}
	pub, err := encodePublish(msg)
	if err != nil {
		return fmt.Errorf("cluster: encoding %q: %w", topic, err)
	}
	fut, err := n.ret.appendAsync(msg, pub, true)
	if err != nil {
		return fmt.Errorf("retained stream: %w", err)
	}
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.ForwardTimeout)
	defer cancel()
	seq, err := n.ret.settleAt(ctx, fut)
	if err != nil {
		return fmt.Errorf("retained stream: %w", err)
	}
	if _, err := n.ret.waitApplied(ctx, seq, nil, false); err != nil {
		return fmt.Errorf("cleared in the cluster, not yet here: %w", err)
	}
	return nil
}
