package cluster

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A group claim (claimFor) whose append JetStream answers "duplicate
// message id is in process" (10158: another claim of the same message for
// the same group is being appended) is appended again until it is
// answered, within its bound; other errors end it at once. Before, the
// claim failed with that answer (groupresend's group claims).
func TestPublishClaimInProcess(t *testing.T) {
	inProcess := &jetstream.APIError{Code: 409, ErrorCode: jsDupInProcess, Description: "duplicate message id is in process"}
	for _, c := range []struct {
		name    string
		answers []error // then a duplicate's acknowledgement
		bound   time.Duration
		calls   int
		err     error
	}{
		{"answered after two in process", []error{inProcess, inProcess}, 30 * time.Second, 3, nil},
		{"other error", []error{jetstream.ErrNoStreamResponse}, 30 * time.Second, 1, jetstream.ErrNoStreamResponse},
		{"in process past the bound", repeat(inProcess, 1000), 300 * time.Millisecond, -1, inProcess},
	} {
		t.Run(c.name, func(t *testing.T) {
			js := &claimJS{answers: c.answers}
			ctx, cancel := context.WithTimeout(t.Context(), c.bound)
			defer cancel()
			ack, err := publishClaim(ctx, js, nats.NewMsg("claim"))
			if !errors.Is(err, c.err) {
				t.Fatalf("err %v, want %v", err, c.err)
			}
			if c.err == nil && (ack == nil || !ack.Duplicate) {
				t.Errorf("ack %+v, want the duplicate's", ack)
			}
			if c.calls >= 0 && js.calls != c.calls {
				t.Errorf("%d appends, want %d", js.calls, c.calls)
			}
			if c.calls < 0 && (js.calls < 2 || js.calls >= len(c.answers)) {
				t.Errorf("%d appends within the bound: want it tried again, and ended by the bound", js.calls)
			}
		})
	}
}

func repeat(err error, n int) []error {
	out := make([]error, n)
	for i := range out {
		out[i] = err
	}
	return out
}

// claimJS answers appends with its answers in turn, then with a
// duplicate's acknowledgement.
type claimJS struct {
	jetstream.JetStream
	answers []error
	calls   int
}

func (c *claimJS) PublishMsg(ctx context.Context, m *nats.Msg, _ ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	c.calls++
	if c.calls <= len(c.answers) {
		return nil, c.answers[c.calls-1]
	}
	return &jetstream.PubAck{Stream: "S", Sequence: 1, Duplicate: true}, nil
}
