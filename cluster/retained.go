package cluster

import (
	"context"
	"fmt"
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
// request. A cleared topic keeps an empty message in the stream, so that a
// node catching up learns of the clearing too.

const (
	retStream = "ROOST_RETAIN"
	retPrefix = subjPrefix + ".ret"
)

// retained is a node's side of the retained stream.
type retained struct {
	n      *Node
	js     jetstream.JetStream
	ready  atomic.Bool
	cc     jetstream.ConsumeContext
	caught atomic.Bool // logged "caught up" once
}

// open creates or opens the stream and starts following it. It returns an
// error while JetStream has no quorum; the caller retries.
func (r *retained) open(ctx context.Context) error {
	_, err := r.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: retStream, Description: "Roost retained messages", Subjects: []string{retPrefix + ".>"},
		MaxMsgsPerSubject: 1, Storage: jetstream.FileStorage, Replicas: r.n.cfg.Replicas,
		MaxMsgSize: -1, Discard: jetstream.DiscardOld,
	})
	if err != nil {
		return fmt.Errorf("retained stream: %w", err)
	}
	cons, err := r.js.OrderedConsumer(ctx, retStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{retPrefix + ".>"}, DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy,
	})
	if err != nil {
		return fmt.Errorf("retained consumer: %w", err)
	}
	cc, err := cons.Consume(r.apply)
	if err != nil {
		return fmt.Errorf("retained consumer: %w", err)
	}
	r.cc = cc
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
	r.n.srv.ApplyRetained(rm)
	if err == nil && meta.NumPending == 0 {
		r.noteCaughtUp()
	}
}

func (r *retained) noteCaughtUp() {
	if r.caught.CompareAndSwap(false, true) {
		r.n.log.Info("cluster retained messages caught up", "stream", retStream)
	}
}

// appendAsync adds a retained publish to the stream and returns the
// future of the stream's acknowledgement (replicated and synced).
func (r *retained) appendAsync(msg *broker.Message, pub []byte) (jetstream.PubAckFuture, error) {
	if !r.ready.Load() {
		return nil, errNotReady
	}
	return r.js.PublishAsync(TopicSubject(retPrefix, msg.Topic), encodeForward(msg, nil, pub))
}

func (r *retained) close() {
	if r.cc != nil {
		r.cc.Stop()
	}
}
