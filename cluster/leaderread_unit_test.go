package cluster

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// TestFirstOfOverlaps: a call that is never answered does not hold
// firstOf once a later call succeeds, and the unanswered one is ended
// when firstOf returns; a call that answers late still wins if it comes
// first.
func TestFirstOfOverlaps(t *testing.T) {
	var calls, ended atomic.Int32
	v, err := firstOf(context.Background(), 10*time.Millisecond, func(ctx context.Context) (int, error) {
		n := calls.Add(1)
		if n == 1 { // the paused leader: no answer until given up
			<-ctx.Done()
			ended.Add(1)
			return 0, ctx.Err()
		}
		return int(n), nil
	})
	if err != nil || v != 2 {
		t.Fatalf("firstOf = %d, %v; want 2 (the second call), nil", v, err)
	}
	eventuallyTrue(t, func() bool { return ended.Load() == 1 }, "the unanswered call was not ended")

	// A slow first answer that comes before a second call's is taken.
	calls.Store(0)
	release := make(chan struct{})
	v, err = firstOf(context.Background(), 10*time.Millisecond, func(ctx context.Context) (int, error) {
		switch calls.Add(1) {
		case 1: // answers once the second call has started
			<-release
			return 1, nil
		case 2:
			close(release)
		}
		<-ctx.Done() // the later calls are never answered
		return 0, ctx.Err()
	})
	if err != nil || v != 1 {
		t.Fatalf("firstOf = %d, %v; want the first call's 1, nil", v, err)
	}
}

// TestFirstOfGivesUp: when ctx ends, firstOf returns the last call's
// error, or ctx's when no call failed.
func TestFirstOfGivesUp(t *testing.T) {
	refused := errors.New("no quorum")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := firstOf(ctx, 10*time.Millisecond, func(context.Context) (int, error) { return 0, refused })
	if !errors.Is(err, refused) {
		t.Errorf("err = %v, want %v", err, refused)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	_, err = firstOf(ctx2, 10*time.Millisecond, func(ctx context.Context) (int, error) { <-ctx.Done(); return 0, ctx.Err() })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want %v", err, context.DeadlineExceeded)
	}
}

// eventuallyTrue waits (bounded) until cond holds.
func eventuallyTrue(t *testing.T, cond func() bool, msg string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
	}
}

// TestFirstAnswer: an ask nobody answers (a dead leader's) is asked again
// while it waits, and the next one's answer ends the wait well within the
// caller's bound (owners.readWill, sessions.recoverEnd: one unanswered ask
// held a claim for its whole 30-s bound, TestReproForwardOutReheld); an
// error that is an answer ends it at once, not asked again.
func TestFirstAnswer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*followAttempt)
	defer cancel()
	var calls atomic.Int32
	start := time.Now()
	v, err := firstAnswer(ctx, func(ctx context.Context) (int, error) {
		if calls.Add(1) == 1 {
			<-ctx.Done() // no answer
			return 0, ctx.Err()
		}
		return 7, nil
	})
	if err != nil || v != 7 || time.Since(start) > 3*followAttempt {
		t.Fatalf("an unanswered first ask: %d, %v after %v; want 7 from the next ask within %v", v, err, time.Since(start), 3*followAttempt)
	}
	refused := errors.New("stream: JetStream system temporarily unavailable (10008)")
	calls.Store(0)
	start = time.Now()
	if _, err := firstAnswer(ctx, func(context.Context) (int, error) { calls.Add(1); return 0, refused }); !errors.Is(err, refused) ||
		calls.Load() != 1 || time.Since(start) > followAttempt {
		t.Fatalf("an error answer: %v after %d asks, %v; want it at once", err, calls.Load(), time.Since(start))
	}
}
