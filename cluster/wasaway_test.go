package cluster

import (
	"testing"
	"time"
)

// A session that left this node (claimed elsewhere) and came back by a
// live move was elsewhere in between: a message held then reached it
// there, and this node's followers do not give it the held copy again;
// one held while it was here, or a session taken from the stream here
// since (adopt), still gets it. Before, TestClusterFull seed 42 had 38
// QoS 2 duplicates for ps1 this way.
func TestWasAwayOnlyBetweenLeavingAndComingBackLive(t *testing.T) {
	s := &sessions{lost: map[string]time.Time{}, adopting: map[string]bool{}}
	before := time.Now()
	s.liveArrival("a") // never left: nothing to skip
	if s.wasAway("a", before) {
		t.Fatal("a session that never left counted as away")
	}
	s.disown("a")
	time.Sleep(time.Millisecond) // distinct instants on coarse clocks
	mid := time.Now()
	s.liveArrival("a")
	after := time.Now().Add(time.Millisecond)
	if !s.wasAway("a", mid) {
		t.Error("a message held while the session was elsewhere is given again")
	}
	if s.wasAway("a", before) {
		t.Error("a message held while the session was here is skipped")
	}
	if s.wasAway("a", after) {
		t.Error("a message held after the session came back is skipped")
	}
	s.adopt("a") // taken from the stream here: the held copies are its to get
	if s.wasAway("a", mid) {
		t.Error("a session taken from the stream skips what was held while it was away")
	}
}
