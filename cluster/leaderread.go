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
// follower) reads from the leader, which has every acknowledged write.

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
	req, _ := json.Marshal(struct {
		LastFor string `json:"last_by_subj"`
	}{subj})
	reply, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+stream, req)
	if err != nil {
		return nil, 0, err
	}
	var resp struct {
		Error *struct {
			Code    int    `json:"code"`
			ErrCode int    `json:"err_code"`
			Desc    string `json:"description"`
		} `json:"error"`
		Message *struct {
			Seq     uint64 `json:"seq"`
			Headers []byte `json:"hdrs"`
			Data    []byte `json:"data"`
		} `json:"message"`
	}
	if err := json.Unmarshal(reply.Data, &resp); err != nil {
		return nil, 0, fmt.Errorf("stream %s: %w", stream, err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrCode == jsErrNoMessageFound:
		return nil, 0, nil
	case resp.Error != nil:
		return nil, 0, fmt.Errorf("stream %s: %s (%d)", stream, resp.Error.Desc, resp.Error.ErrCode)
	case resp.Message == nil:
		return nil, 0, fmt.Errorf("stream %s: empty answer", stream)
	case bytes.Contains(resp.Message.Headers, []byte(kvOperationHdr)):
		return nil, 0, nil // a deleted or purged key
	}
	return resp.Message.Data, resp.Message.Seq, nil
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
// deliver policy; the rest is set here) from the stream's leader, in
// order, passing each to fn, until none is pending. A fetch that brings
// nothing three times in a row (the stream is electing a leader) or a
// message lost on the way ends the read with an error, for the caller to
// try again; so does an error from fn.
func readAll(ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.ConsumerConfig, fn func(jetstream.Msg) error) error {
	cfg.AckPolicy, cfg.Replicas, cfg.MemoryStorage = jetstream.AckNonePolicy, 1, true
	cfg.InactiveThreshold = readInactive
	cons, err := leaderConsumer(ctx, js, stream, cfg)
	if err != nil {
		return err
	}
	defer func() {
		// Best effort: one left behind goes after readInactive.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), followAttempt)
		js.DeleteConsumer(dctx, stream, cons.CachedInfo().Name)
		cancel()
	}()
	left := cons.CachedInfo().NumPending
	if left == 0 {
		return nil
	}
	var delivered uint64
	for misses := 0; left > 0; {
		// No more than is pending: a fetch returns only once it has
		// all it asked for or its wait is over, so asking for a full
		// batch made every read wait the 2 s out at its end (a session
		// record of a few ops took 2 s to read, the owner records at a
		// restart 2 s more than their transfer).
		batch, err := cons.Fetch(int(min(left, fetchMax)), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return err
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
			delivered, left = md.Sequence.Consumer, md.NumPending
			if err := fn(m); err != nil {
				return err
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return err
		}
		if got == 0 {
			if misses++; misses == 3 {
				return errors.New("no progress")
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

// readInactive is how long a reading consumer left behind stays.
const readInactive = 30 * time.Second
