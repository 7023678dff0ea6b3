package cluster

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// TestGroupKeysLogValue: a pass-on line names its groups as group/filter,
// and builds that text only for a handler that writes the line.
func TestGroupKeysLogValue(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	log.Debug("passed", "groups", groupKeys{"g0\x00t/#", "g1\x00t/+"})
	if got := buf.String(); !strings.Contains(got, `groups="g0/t/# g1/t/+"`) {
		t.Fatalf("logged %q", got)
	}
	quiet := slog.New(slog.NewTextHandler(&buf, nil)) // info: the line is not written
	gks := []string{"g0\x00t/#", "g1\x00t/+"}
	if allocs := testing.AllocsPerRun(100, func() {
		quiet.Debug("passed", "groups", groupKeys(gks))
	}); allocs > 1 {
		t.Fatalf("an unwritten line allocated %v times, want at most 1 (its argument's boxing)", allocs)
	}
}

// TestPassClaims: a group claim this node's follower made for a member
// that moved out live is its own when the same message is read again
// (after errClaim); any other claim for that member is not.
func TestPassClaims(t *testing.T) {
	mv := &liveMoves{}
	if mv.passClaimed("g.i.a9.c.g1") {
		t.Fatal("a claim nobody noted is the follower's own")
	}
	mv.notePassClaim("g.i.a9.c.g1")
	if !mv.passClaimed("g.i.a9.c.g1") {
		t.Fatal("the follower's own claim is not found again")
	}
	if mv.passClaimed("g.i.a9.c.g0") {
		t.Fatal("another group's claim is the follower's own")
	}
}
