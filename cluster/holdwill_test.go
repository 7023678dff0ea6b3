package cluster

import (
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
)

// TestHoldWill: a delayed will not yet due when a client's CONNECT takes
// its session over waits for the takeover's bound too; a will without a
// delay, or already due, is left as it is.
func TestHoldWill(t *testing.T) {
	will := &broker.Message{Topic: "w"}
	now := time.Now()
	const bound = 5 * time.Second
	for _, tt := range []struct {
		name     string
		rec      broker.StoredSession
		min, max time.Duration // of WillAt - now; 0, 0: WillAt unchanged
	}{
		{name: "no will", rec: broker.StoredSession{WillDelay: 3 * time.Second}},
		{name: "no delay", rec: broker.StoredSession{Will: will}},
		{name: "connected at the death", rec: broker.StoredSession{Will: will, WillDelay: 3 * time.Second},
			min: 3*time.Second + bound - time.Second, max: 3*time.Second + bound + time.Second},
		{name: "due later", rec: broker.StoredSession{Will: will, WillDelay: time.Minute, WillAt: now.Add(10 * time.Second)},
			min: 10*time.Second + bound - time.Second, max: 10*time.Second + bound + time.Second},
		{name: "due already", rec: broker.StoredSession{Will: will, WillDelay: time.Second, WillAt: now.Add(-time.Second)}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := tt.rec.WillAt
			holdWill(&tt.rec, bound)
			if tt.min == 0 && tt.max == 0 {
				if !tt.rec.WillAt.Equal(before) {
					t.Errorf("WillAt %v, want it unchanged (%v)", tt.rec.WillAt, before)
				}
				return
			}
			if d := tt.rec.WillAt.Sub(now); d < tt.min || d > tt.max {
				t.Errorf("WillAt now+%v, want between now+%v and now+%v", d, tt.min, tt.max)
			}
		})
	}
}
