package cluster

import (
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// A session's last op counts from when it was made, not when a stream
// that had no quorum stored it (opMadeHeader): a record holds nothing
// its node took after the op was made.
func TestOpTime(t *testing.T) {
	stored := time.Unix(1000, 0)
	made := stored.Add(-550 * time.Millisecond)
	with := func(v string) heldMsg { return heldMsg{h: nats.Header{opMadeHeader: []string{v}}} }
	for _, tt := range []struct {
		name string
		m    heldMsg
		want time.Time
	}{
		{"made before stored", with(strconv.FormatInt(made.UnixNano(), 10)), made},
		{"made after stored (a clock ahead)", with(strconv.FormatInt(stored.Add(time.Second).UnixNano(), 10)), stored},
		{"no header (an older node)", heldMsg{}, stored},
		{"unreadable", with("x"), stored},
	} {
		if got := opTime(tt.m, stored); !got.Equal(tt.want) {
			t.Errorf("%s: opTime = %v, want %v", tt.name, got, tt.want)
		}
	}
	ops := []repOp{{made: made}, {made: made.Add(time.Millisecond)}, {made: made.Add(-time.Millisecond)}}
	if got := packMade(ops); !got.Equal(made.Add(time.Millisecond)) {
		t.Errorf("packMade = %v, want the newest op's time", got)
	}
}
