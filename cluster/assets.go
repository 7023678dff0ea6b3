package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The cluster's replicated objects (the ownership bucket, the session
// streams and the retained stream) are made by whichever node gets there
// first and opened by the others, all at once when a cluster starts. Two
// behaviours of the JetStream API shape how a node asks:
//
//   - Before the meta group has a leader that this node follows, an API
//     request gets no answer at all: the client waits out its timeout.
//     So a node waits (briefly, watching its own server) until its meta
//     layer is current before it asks.
//   - A stream update is answered by the stream's leader only, when it
//     applies the update. An update of a stream that another node has just
//     created reaches its members before they have elected that leader,
//     and then nobody answers (nats-server processClusterUpdateStream):
//     nats.go's CreateOrUpdateStream, which tries an update first, waited
//     out its whole attempt (10 s) in most starts of a fresh cluster. A
//     create with the same configuration is idempotent and answered by
//     every member that has the stream (processClusterCreateStream), so a
//     node creates, and updates only when the stream exists with another
//     configuration (made by another version).
//   - A node restarted with the cluster's state on its disk answers that
//     create itself, from its own copy of the meta state, before it has
//     routes to the others: "ready" then meant nothing, and the first
//     CONNECT's ownership claim went unanswered for forward_timeout
//     (TestClusterNodeLoss, 1 run in 3). So a create that succeeds is
//     followed by an info request, which only the object's leader answers
//     (nats-server jsStreamInfoRequest): the node is ready once that leader
//     answers it.

const (
	// metaPoll is how often awaitMeta looks at the meta layer.
	metaPoll = 20 * time.Millisecond
	// firstAttempt and maxAttempt bound each attempt of a step of
	// openAssets.
	firstAttempt = time.Second
	maxAttempt   = 10 * time.Second
)

// openAssets creates or opens the cluster's replicated objects (the
// ownership bucket and the retained stream), retrying until they work or
// the node stops: they need a JetStream meta leader, so a quorum of nodes.
func (n *Node) openAssets() {
	defer n.wg.Done()
	js, err := jetstream.New(n.eng.nc)
	if err != nil {
		n.log.Error("cluster: JetStream client", "err", err)
		return
	}
	n.ret.js = js
	// Sessions before retained messages: a node that logs "retained
	// messages caught up" can keep persistent sessions too.
	steps := []func(context.Context, jetstream.JetStream) error{n.own.open}
	if n.sess != nil {
		steps = append(steps, n.streamsLate, n.sess.open)
	}
	steps = append(steps, func(ctx context.Context, _ jetstream.JetStream) error { return n.ret.open(ctx) })
	for _, step := range steps {
		// Short attempts at first, as a request the meta layer drops
		// (no leader, or one lost again just after awaitMeta saw it)
		// gets no answer at all; longer ones after each that got none
		// although the meta layer was current, up to maxAttempt:
		// creating replicated streams on a loaded machine takes seconds.
		// Without a quorum the attempts stay short, so that a node
		// notices one soon when it comes. A repeated create is harmless
		// (idempotent).
		attempt := firstAttempt
		for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, time.Second) {
			current := n.awaitMeta(2 * time.Second)
			ctx, cancel := context.WithTimeout(n.ctx, attempt)
			err := step(ctx, js)
			cancel()
			if err == nil {
				break
			}
			if current && errors.Is(err, context.DeadlineExceeded) {
				attempt = min(2*attempt, maxAttempt)
			}
			n.log.Debug("cluster: replicated state not ready; retrying", "err", err, "backoff", backoff)
			select {
			case <-n.ctx.Done():
				return
			case <-time.After(backoff):
			}
		}
	}
}

// streamsLate is the fault streams-late: once, before the session
// streams open, it waits its duration when the node restored sessions.
// Not bounded by the step's attempt: the wait is the fault.
func (n *Node) streamsLate(context.Context, jetstream.JetStream) error {
	d := n.fault.streamsOpenDelay()
	if d == 0 || !n.sess.restoredAny() {
		return nil
	}
	n.log.Info("cluster: test fault: the session streams open late", "after", d)
	select {
	case <-n.ctx.Done():
		return n.ctx.Err()
	case <-time.After(d):
	}
	return nil
}

// awaitMeta waits until this node's JetStream meta layer follows a leader
// and is caught up with it, so that API requests are answered, or for d at
// most: it is a way to spare requests that would go unanswered, not a
// condition (a node whose meta layer never says so still asks). It
// reports whether the meta layer was current.
func (n *Node) awaitMeta(d time.Duration) bool {
	if n.eng.srv.JetStreamIsCurrent() {
		return true
	}
	began := time.Now()
	t := time.NewTicker(metaPoll)
	defer t.Stop()
	bound := time.After(d)
	for {
		select {
		case <-n.ctx.Done():
			return false
		case <-bound:
			n.log.Debug("cluster: JetStream meta layer not current; asking anyway", "waited", d)
			return false
		case <-t.C:
			if n.eng.srv.JetStreamIsCurrent() {
				n.log.Debug("cluster: JetStream meta layer current", "waited", time.Since(began).Round(time.Millisecond))
				return true
			}
		}
	}
}

// createOrUpdateStream creates the stream cfg describes, or opens it if it
// exists with that configuration, or updates it to cfg if it exists with
// another (see above for why not the other way round).
func createOrUpdateStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	s, err := js.CreateStream(ctx, cfg)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return js.UpdateStream(ctx, cfg)
	}
	if err != nil {
		return nil, err
	}
	if _, err := s.Info(ctx); err != nil {
		return nil, fmt.Errorf("stream %s has no leader this node reaches: %w", cfg.Name, err)
	}
	return s, nil
}

// createOrUpdateKV is createOrUpdateStream for a key-value bucket.
func createOrUpdateKV(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.CreateKeyValue(ctx, cfg)
	if errors.Is(err, jetstream.ErrBucketExists) {
		return js.UpdateKeyValue(ctx, cfg)
	}
	if err != nil {
		return nil, err
	}
	if _, err := kv.Status(ctx); err != nil {
		return nil, fmt.Errorf("bucket %s has no leader this node reaches: %w", cfg.Bucket, err)
	}
	return kv, nil
}
