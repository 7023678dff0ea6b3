// Package eventually is the one way Roost's tests wait for something to
// happen: poll a condition until it holds or a bound passes, then fail the
// test saying what did not happen. It replaces sleep-then-assert, which
// passes on a quiet machine and fails on a busy one.
//
// Bounds are generous on purpose (seconds, not milliseconds): a condition
// that holds returns as soon as it does, so a long bound costs nothing on
// a quiet machine and keeps a loaded one (the race detector, other builds
// on the same cores) from failing a correct test. Where a test checks a
// timing the spec sets (keep alive at 1.5 times, a will delay), it bounds
// the wait by the spec's value plus a margin and says so beside the call.
//
// Call True and NoError from the test's goroutine: they end the test with
// t.Fatalf.
package eventually

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// Poll is how long the helpers wait between two checks of a condition.
const Poll = 10 * time.Millisecond

// True polls cond every Poll until it returns true, and fails t with the
// message made from format and args, and the bound, if within passes
// first. cond is checked once more at the bound, so a slow machine that
// overslept still sees the latest state.
func True(t testing.TB, within time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	if err := Wait(within, func() error {
		if cond() {
			return nil
		}
		return fmt.Errorf(format, args...)
	}); err != nil {
		t.Fatal(err)
	}
}

// NoError polls cond every Poll until it returns nil, and fails t with
// cond's last error and the bound if within passes first.
func NoError(t testing.TB, within time.Duration, cond func() error) {
	t.Helper()
	if err := Wait(within, cond); err != nil {
		t.Fatal(err)
	}
}

// Within polls cond every Poll until it returns true (Within returns true)
// or within passes (false, after one last check). It is for tests that,
// on failure, print state gathered after the wait (a log, a count).
func Within(within time.Duration, cond func() bool) bool {
	return Wait(within, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	}) == nil
}

var errNotYet = errors.New("condition not met")

// Wait polls cond every Poll until it returns nil (Wait returns nil) or
// within passes (Wait returns cond's last error, saying how long it
// waited). It is for the places that cannot fail a test directly: a
// helper goroutine, or a test that goes on after a timeout.
func Wait(within time.Duration, cond func() error) error {
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("not within %v: %w", within, err)
		}
		time.Sleep(min(Poll, time.Until(deadline)+time.Millisecond))
	}
}
