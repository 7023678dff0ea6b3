package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Reads from the stream's leader.
//
// A replicated stream's replicas are not all current: one on a node just
// restarted or resumed from a pause is catching up, and JetStream lets it
// answer anyway: a key-value get is answered "directly" by whichever
// replica the request reaches, and a one-replica consumer is put on any
// replica and delivers from that replica's copy. Both bit the cluster:
// a node resumed after a pause read its own stale owner record naming it
// the owner and published a will the new owner had published already; a
// direct get that reached the paused node got no answer for 5 s with the
// leader alive; a restarted node applied retained messages cleared while
// it was down. What decides (owner records, session records, the retained
// follower) reads from the leader, which has every acknowledged write, or
// (readAll) from any replica up to the leader's last message.

// leaderGet returns the last message of subj in stream and its sequence
// (0, and no error, when there is none or it marks a deleted key), as the
// stream's leader has it.
//
// Not jetstream.KeyValue.Get: a key-value bucket answers gets "directly",
// from whichever replica the request reaches, and a replica may be stale.
// A node resumed after a pause read its own replica's record naming it the
// owner, and published a will the new owner had published already; and a
// direct get that reached the paused node got no answer until it timed
// out (5 s), with the leader alive. The leader has every acknowledged
// write.
func leaderGet(ctx context.Context, nc *nats.Conn, stream, subj string) ([]byte, uint64, error) {
	m, err := leaderLast(ctx, nc, stream, subj)
	switch {
	case err != nil:
		return nil, 0, err
	case m == nil || bytes.Contains(m.Headers, []byte(kvOperationHdr)):
		return nil, 0, nil // none, or a deleted or purged key
	}
	return m.Data, m.Seq, nil
}

// storedMsg is a message as the stream's leader answers a get with it.
type storedMsg struct {
	Seq     uint64    `json:"seq"`
	Time    time.Time `json:"time"`
	Headers []byte    `json:"hdrs"`
	Data    []byte    `json:"data"`
}

// leaderLast returns the last message in stream whose subject matches
// subj (wildcards too), as the stream's leader has it, whatever it is (a
// key's delete marker too); nil, and no error, when there is none.
func leaderLast(ctx context.Context, nc *nats.Conn, stream, subj string) (*storedMsg, error) {
	req, _ := json.Marshal(struct {
		LastFor string `json:"last_by_subj"`
	}{subj})
	reply, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+stream, req)
	if err != nil {
		return nil, err
	}
	var resp struct {
		Error *struct {
			Code    int    `json:"code"`
			ErrCode int    `json:"err_code"`
			Desc    string `json:"description"`
		} `json:"error"`
		Message *storedMsg `json:"message"`
	}
	if err := json.Unmarshal(reply.Data, &resp); err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrCode == jsErrNoMessageFound:
		return nil, nil
	case resp.Error != nil:
		return nil, fmt.Errorf("stream %s: %s (%d)", stream, resp.Error.Desc, resp.Error.ErrCode)
	case resp.Message == nil:
		return nil, fmt.Errorf("stream %s: empty answer", stream)
	}
	return resp.Message, nil
}

const (
	// jsErrNoMessageFound is JetStream's error code for "no message found".
	jsErrNoMessageFound = 10037
	// kvOperationHdr marks a key-value delete or purge.
	kvOperationHdr = "KV-Operation"
)

// leaderConsumer makes a consumer of stream with cfg on the stream's
// leader: one made elsewhere is deleted and made again (JetStream places
// it on a random replica, so a few tries suffice), until ctx ends.
//
// Each try is bounded by followAttempt, and an error of one (no answer:
// the consumer was put on a node that just died, or the stream is electing
// a leader) is tried again after a short pause, until ctx ends.
func leaderConsumer(ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	for backoff := 50 * time.Millisecond; ; backoff = min(2*backoff, 500*time.Millisecond) {
		cons, err := tryLeaderConsumer(ctx, js, stream, cfg)
		if err == nil {
			return cons, nil
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(backoff):
		}
	}
}

func tryLeaderConsumer(ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	ctx, cancel := context.WithTimeout(ctx, followAttempt)
	defer cancel()
	cons, err := js.CreateConsumer(ctx, stream, cfg)
	if err != nil {
		return nil, err
	}
	ci := cons.CachedInfo()
	if ci.Cluster == nil || ci.Cluster.Leader == "" {
		return cons, nil // one server, no replicas
	}
	st, err := js.Stream(ctx, stream) // the leader answers
	if err != nil {
		return nil, err
	}
	leader := ""
	if si := st.CachedInfo(); si.Cluster != nil {
		leader = si.Cluster.Leader
	}
	if leader == ci.Cluster.Leader {
		return cons, nil
	}
	if err := js.DeleteConsumer(ctx, stream, ci.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("consumer made on %s, not on the leader %q, and not deleted: %w", ci.Cluster.Leader, leader, err)
	}
	return nil, fmt.Errorf("consumer made on %s, not on the leader %q", ci.Cluster.Leader, leader)
}

// readAll reads the messages of stream that cfg selects (its filter and
// deliver policy; the rest is set here), in order, passing each to fn,
// until it has seen the last one the stream's leader had when the read
// began: every acknowledged write before the read. A fetch that brings
// nothing three times in a row (the stream is electing a leader, or the
// replica read lags and does not catch up) or a message lost on the way
// ends the read with an error, for the caller to try again; so does an
// error from fn.
//
// The reading consumer goes wherever JetStream puts it (nats-server
// places one-replica consumers on any current replica), and its replica
// may lag the leader; the leader's last sequence for the filter says when
// the read is complete, since a replica applies the stream's writes in
// order. Before, the consumer was made again until it landed on the
// leader: two meta-layer operations a miss (two in three tries on three
// replicas), and under load whole reads, and the claims waiting on them,
// ran out of their bound ("consumer made on n1, not on the leader").
// Nothing to read (the leader has no message past cfg's start) makes no
// consumer at all.
func readAll(ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.ConsumerConfig, fn func(jetstream.Msg) error) error {
	end, err := readEnd(ctx, js.Conn(), stream, cfg)
	if err != nil || end == 0 {
		return err
	}
	cfg.AckPolicy, cfg.Replicas, cfg.MemoryStorage = jetstream.AckNonePolicy, 1, true
	cfg.InactiveThreshold = readInactive
	cons, err := readConsumer(ctx, js, stream, cfg)
	if err != nil {
		return err
	}
	defer func() {
		// Best effort: one left behind goes after readInactive.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), followAttempt)
		js.DeleteConsumer(dctx, stream, cons.CachedInfo().Name)
		cancel()
	}()
	// What the replica has pending: a lagging one has less than the
	// leader, and is asked for one at a time until it has caught up.
	left := cons.CachedInfo().NumPending
	var delivered, seen uint64
	unknown := 0
	for misses := 0; seen < end; {
		// No more than is pending: a fetch returns only once it has
		// all it asked for or its wait is over, so asking for a full
		// batch made every read wait the 2 s out at its end (a session
		// record of a few ops took 2 s to read, the owner records at a
		// restart 2 s more than their transfer).
		batch, err := cons.Fetch(int(min(max(left, 1), fetchMax)), jetstream.FetchMaxWait(2*time.Second))
		if err != nil && !errors.Is(err, nats.ErrNoResponders) {
			return err
		}
		if err != nil {
			if err := unknownYet(ctx, &unknown, err); err != nil {
				return err
			}
			continue
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				return err
			}
			if md.Sequence.Consumer != delivered+1 {
				return fmt.Errorf("message %d came after %d: one was lost on the way", md.Sequence.Consumer, delivered)
			}
			delivered, left, seen = md.Sequence.Consumer, md.NumPending, md.Sequence.Stream
			if err := fn(m); err != nil {
				return err
			}
		}
		if err := batch.Error(); errors.Is(err, nats.ErrNoResponders) && got == 0 {
			if err := unknownYet(ctx, &unknown, err); err != nil {
				return err
			}
			continue
		} else if err != nil && !errors.Is(err, nats.ErrTimeout) {
			return err
		}
		if got == 0 {
			if misses++; misses == 3 {
				return fmt.Errorf("no progress: read up to %d of %d", seen, end)
			}
		} else {
			misses = 0
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

// unknownYet waits a moment after a fetch that found no responder: the
// consumer, made on another node, is not known on this one's routes yet.
// It returns err once that happened unknownMax times in a read (*count).
func unknownYet(ctx context.Context, count *int, err error) error {
	if *count++; *count == unknownMax {
		return fmt.Errorf("reading consumer not reachable: %w", err)
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(100 * time.Millisecond):
		return nil
	}
}

// unknownMax bounds unknownYet's waits in one read (2 s).
const unknownMax = 20

// readEnd returns the sequence of the last message of stream that cfg
// selects, as the stream's leader has it; 0 when there is none (none
// matches the filter, or none is at or past cfg's start).
func readEnd(ctx context.Context, nc *nats.Conn, stream string, cfg jetstream.ConsumerConfig) (uint64, error) {
	filter := cfg.FilterSubject
	if filter == "" {
		filter = ">"
	}
	last, err := leaderLastRetried(ctx, nc, stream, filter)
	switch {
	case err != nil:
		return 0, fmt.Errorf("stream %s: the leader's last message: %w", stream, err)
	case last == nil:
		return 0, nil
	case cfg.DeliverPolicy == jetstream.DeliverByStartSequencePolicy && last.Seq < cfg.OptStartSeq:
		return 0, nil
	case cfg.DeliverPolicy == jetstream.DeliverByStartTimePolicy && cfg.OptStartTime != nil && last.Time.Before(*cfg.OptStartTime):
		return 0, nil
	}
	return last.Seq, nil
}

// leaderLastRetried is leaderLast, each try bounded by followAttempt and
// tried again after a short pause, until ctx ends, when it gets no answer
// (the stream elects a leader, or the JetStream API is not reachable from
// this server yet).
func leaderLastRetried(ctx context.Context, nc *nats.Conn, stream, subj string) (*storedMsg, error) {
	return retried(ctx, func(ctx context.Context) (*storedMsg, error) { return leaderLast(ctx, nc, stream, subj) },
		func(err error) bool {
			return errors.Is(err, nats.ErrNoResponders) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)
		})
}

// readConsumer makes a consumer of stream with cfg, wherever JetStream
// puts it, trying again after a short pause, until ctx ends, when a try
// (bounded by followAttempt) fails: no answer while the stream elects a
// leader, or a consumer put on a node that just died.
func readConsumer(ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	return retried(ctx, func(ctx context.Context) (jetstream.Consumer, error) { return js.CreateConsumer(ctx, stream, cfg) },
		func(error) bool { return true })
}

// retried calls try, each call bounded by followAttempt, until it
// succeeds, fails with an error again says is not worth another try, or
// ctx ends (with the last error); the pause between tries doubles from
// 50 ms to 500 ms.
func retried[T any](ctx context.Context, try func(context.Context) (T, error), again func(error) bool) (T, error) {
	for backoff := 50 * time.Millisecond; ; backoff = min(2*backoff, 500*time.Millisecond) {
		actx, cancel := context.WithTimeout(ctx, followAttempt)
		v, err := try(actx)
		cancel()
		if err == nil || !again(err) {
			return v, err
		}
		select {
		case <-ctx.Done():
			var zero T
			return zero, err
		case <-time.After(backoff):
		}
	}
}

// firstAnswer calls try as firstOf does, every followAttempt, until a
// call is answered: an error that is an answer (the stream's, JetStream's)
// ends it too; only no answer (no responder, the wait's end) is asked
// again. For a request that a dead or not yet elected leader leaves
// unanswered: alone, it held its caller for the caller's whole bound
// (owners.readWill, sessions.recoverEnd).
func firstAnswer[T any](ctx context.Context, try func(context.Context) (T, error)) (T, error) {
	type answer struct {
		v   T
		err error
	}
	a, err := firstOf(ctx, followAttempt, func(ctx context.Context) (answer, error) {
		v, err := try(ctx)
		if err != nil && !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) {
			return answer{err: err}, nil
		}
		return answer{v: v}, err
	})
	if err != nil {
		var zero T
		return zero, err
	}
	return a.v, a.err
}

// firstOf calls try at once and again every `every` until a call
// succeeds, and returns that call's value. Unlike retried, the calls
// overlap: a call still waiting for its answer is not given up when the
// next one starts (a slow answer is as good as a quick one), only when
// firstOf returns. When ctx ends first it returns the last call's error
// (ctx's if none failed).
func firstOf[T any](ctx context.Context, every time.Duration, try func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the calls still waiting
	type result struct {
		v   T
		err error
	}
	results := make(chan result)
	start := func() {
		go func() {
			v, err := try(ctx)
			select {
			case results <- result{v, err}:
			case <-ctx.Done():
			}
		}()
	}
	start()
	tick := time.NewTicker(every)
	defer tick.Stop()
	var last error
	for {
		select {
		case r := <-results:
			if r.err == nil {
				return r.v, nil
			}
			last = r.err
		case <-tick.C:
			start()
		case <-ctx.Done():
			var zero T
			if last == nil {
				last = ctx.Err()
			}
			return zero, last
		}
	}
}

// readInactive is how long a reading consumer left behind stays.
const readInactive = 30 * time.Second
