package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/roost-mqtt/roost/broker"
)

// Retained messages are kept by the cluster: a stream with Config.Replicas
// copies and at most one message per subject, the subject being the topic
// (escaped, see subject.go) under retPrefix. A retained publish on any
// node (an empty one to clear) is appended there; every node follows the
// stream from its start with an ordered consumer (the last message of each
// subject first, then what comes) and applies each message to its own
// retained tree, its own included, so every node applies the same changes
// in the same order and they all end with the same message per topic. A
// new subscription is answered from the local tree, with no cross-node
// request.
//
// A cleared topic leaves an empty message (a tombstone) in the stream, so
// that nodes following the stream learn of the clearing; it expires after
// Config.TombstoneTTL (a JetStream per-message TTL), and so does a message
// with a Message Expiry when it expires, so the stream holds the topics
// that have a retained message and the clearings of the last TTL, no more.
// A node that starts again after a tombstone expired would still hold the
// cleared message from its own store; so when a node has caught up with
// the stream it clears every retained message it had at start that the
// stream did not mention and nothing has replaced since (reconcile).
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
	cc     jetstream.ConsumeContext
	caught atomic.Bool // logged "caught up" once
	stream jetstream.Stream

	mu sync.Mutex
	// seqs holds the stream sequence of the last message applied here per
	// subject: the condition of this node's next append to it.
	seqs map[string]uint64
	// stale holds the retained messages this node had when it began to
	// follow the stream, less those the stream has mentioned since; nil
	// once caught up.
	stale map[string]*broker.Message
}

// open creates or opens the stream and starts following it. It returns an
// error while JetStream has no quorum; the caller retries.
func (r *retained) open(ctx context.Context) error {
	stream, err := r.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: retStream, Description: "Roost retained messages", Subjects: []string{retPrefix + ".>"},
		MaxMsgsPerSubject: 1, Storage: jetstream.FileStorage, Replicas: r.n.cfg.Replicas,
		MaxMsgSize: -1, Discard: jetstream.DiscardOld,
		// Tombstones and expired messages leave the stream by TTL.
		AllowMsgTTL: true,
	})
	if err != nil {
		return fmt.Errorf("retained stream: %w", err)
	}
	if r.cc == nil {
		r.snapshotLocal()
	}
	cons, err := r.js.OrderedConsumer(ctx, retStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{retPrefix + ".>"}, DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy,
	})
	if err != nil {
		return fmt.Errorf("retained consumer: %w", err)
	}
	// The ordered consumer lives on one server (the stream leader's):
	// when that node dies, the consumer is made again elsewhere only once
	// its heartbeats are missed. Short pulls (heartbeats every second,
	// where the default is 5 s) keep this node from missing retained
	// changes for long after a node loss.
	cc, err := cons.Consume(r.apply, jetstream.PullExpiry(retainedPullExpiry))
	if err != nil {
		return fmt.Errorf("retained consumer: %w", err)
	}
	r.cc = cc
	r.stream = stream
	r.ready.Store(true)
	info, err := r.js.Stream(ctx, retStream)
	if err == nil && info.CachedInfo().State.Msgs == 0 {
		r.noteCaughtUp()
	}
	return nil
}

// apply applies one message of the stream to this node's retained tree.
func (r *retained) apply(m jetstream.Msg) {
	rm, err := decodeForward(m.Data())
	if err != nil {
		r.n.log.Warn("cluster: bad message in the retained stream", "subject", m.Subject(), "err", err)
		return
	}
	meta, err := m.Metadata()
	if err == nil && rm.ExpiresIn > 0 {
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
	if err == nil {
		r.mu.Lock()
		if r.seqs == nil {
			r.seqs = make(map[string]uint64)
		}
		r.seqs[m.Subject()] = max(r.seqs[m.Subject()], meta.Sequence.Stream)
		r.mu.Unlock()
		if meta.NumPending == 0 {
			r.noteCaughtUp()
		}
	}
}

// snapshotLocal notes the retained messages this node has before it
// follows the stream (from its own store).
func (r *retained) snapshotLocal() {
	msgs, _ := r.n.srv.RetainedMessages("#", 0) // "#" is valid
	r.mu.Lock()
	r.stale = make(map[string]*broker.Message, len(msgs))
	for _, m := range msgs {
		r.stale[m.Topic] = m
	}
	r.mu.Unlock()
}

func (r *retained) noteCaughtUp() {
	if r.caught.CompareAndSwap(false, true) {
		r.reconcile()
		r.n.log.Info("cluster retained messages caught up", "stream", retStream)
	}
}

// reconcile clears the retained messages this node had at start that the
// stream did not mention while it caught up, unless something replaced
// them since: their clearing was in the stream, and its tombstone expired.
func (r *retained) reconcile() {
	r.mu.Lock()
	stale := r.stale
	r.stale = nil
	r.mu.Unlock()
	cleared := 0
	for _, m := range stale {
		if r.n.srv.ClearRetainedIf(m) {
			cleared++
		}
	}
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
	for {
		select {
		case <-fut.Ok():
			return nil
		case err := <-fut.Err():
			if !isWrongLastSeq(err) {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
		m := fut.Msg()
		var seq uint64
		last, err := r.stream.GetLastMsgForSubject(ctx, m.Subject)
		switch {
		case err == nil:
			seq = last.Sequence
		case errors.Is(err, jetstream.ErrMsgNotFound):
		default:
			return err
		}
		opts := []jetstream.PublishOpt{jetstream.WithExpectLastSequencePerSubject(seq)}
		if ttl, err := time.ParseDuration(m.Header.Get(jetstream.MsgTTLHeader)); err == nil && ttl > 0 {
			opts = append(opts, jetstream.WithMsgTTL(ttl)) // kept from the first append
		}
		fut, err = r.js.PublishAsync(m.Subject, m.Data, opts...)
		if err != nil {
			return err
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

func (r *retained) close() {
	if r.cc != nil {
		r.cc.Stop()
	}
}

// ClearRetained implements broker.RetainedClearer: a tombstone for topic
// in the stream (fenced, as a QoS 1/2 clearing is), which every node
// applies.
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
	if err := n.ret.settle(ctx, fut); err != nil {
		return fmt.Errorf("retained stream: %w", err)
	}
	return nil
}
