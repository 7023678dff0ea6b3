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
