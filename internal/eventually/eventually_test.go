package eventually

import (
	"errors"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestWaitReturnsOnceTheConditionHolds(t *testing.T) {
	var calls atomic.Int32
	err := Wait(10*time.Second, func() error {
		if calls.Add(1) < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || calls.Load() != 3 {
		t.Fatalf("Wait = %v after %d calls, want nil after 3", err, calls.Load())
	}
}

// A condition that never holds ends with its last error and the bound, and
// it was checked at (or after) the bound, not only before.
func TestWaitFailsWithTheLastErrorAtTheBound(t *testing.T) {
	start := time.Now()
	var last time.Time
	err := Wait(50*time.Millisecond, func() error {
		last = time.Now()
		return errors.New("still 3 of 5")
	})
	if err == nil || !strings.Contains(err.Error(), "not within 50ms: still 3 of 5") {
		t.Fatalf("Wait = %v", err)
	}
	if last.Sub(start) < 50*time.Millisecond {
		t.Fatalf("last check %v after the start, before the bound", last.Sub(start))
	}
}

// True and NoError fail the test they are given with the message.
func TestTrueAndNoErrorFailTheTest(t *testing.T) {
	for name, f := range map[string]func(tb testing.TB){
		"True": func(tb testing.TB) { True(tb, 20*time.Millisecond, func() bool { return false }, "%d messages", 2) },
		"NoError": func(tb testing.TB) {
			NoError(tb, 20*time.Millisecond, func() error { return errors.New("2 messages") })
		},
	} {
		r := &recorder{TB: t}
		done := make(chan struct{})
		go func() { defer close(done); f(r) }() // Fatal ends only this goroutine
		<-done
		if !strings.Contains(r.msg, "not within 20ms: 2 messages") {
			t.Errorf("%s failed with %q", name, r.msg)
		}
	}
}

type recorder struct {
	testing.TB
	msg string
}

func (r *recorder) Helper() {}
func (r *recorder) Fatal(args ...any) {
	r.msg = args[0].(error).Error()
	runtime.Goexit()
}
