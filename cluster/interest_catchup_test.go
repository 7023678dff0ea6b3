package cluster

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestCatchUpWait: a claim that arrives while the node catches up waits
// for it (within its own bound) instead of failing at once, and fails with
// errCatchingUp when its bound ends first.
func TestCatchUpWait(t *testing.T) {
	var c catchUp
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := c.wait(ctx); !errors.Is(err, errCatchingUp) {
		t.Fatalf("wait before the catch-up, bound ended: %v, want errCatchingUp", err)
	}
	got := make(chan error, 1)
	go func() { got <- c.wait(context.Background()) }()
	select {
	case err := <-got:
		t.Fatalf("wait returned %v before the catch-up", err)
	case <-time.After(20 * time.Millisecond):
	}
	c.markDone()
	c.markDone() // a second mark (the bound and the last snapshot at once) is harmless
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("wait after the catch-up: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("wait did not return after the catch-up")
	}
	if err := c.ready(); err != nil {
		t.Fatalf("ready after the catch-up: %v", err)
	}
}
