package cluster

import "testing"

// TestOpHeldHeader: a pack names the earliest place of its ops (the
// follower's place only grows, so that is its oldest op's), the header
// reads back as written, and a missing or unreadable one is no place (the
// held subjects are read by time, as before).
func TestOpHeldHeader(t *testing.T) {
	if got := packHeld([]repOp{{held: 0}, {held: 9}, {held: 7}, {held: 0}}); got != 7 {
		t.Errorf("packHeld = %d, want 7", got)
	}
	if got := packHeld([]repOp{{}, {}}); got != 0 {
		t.Errorf("packHeld of ops made outside the window = %d, want 0", got)
	}
	if got := parseOpHeld(formatOpHeld("n1", 407)); got != (heldBehind{node: "n1", from: 407}) {
		t.Errorf("round trip = %+v", got)
	}
	for _, v := range []string{"", "407", "407 ", "x n1", "-1 n1"} {
		if got := parseOpHeld(v); got != (heldBehind{}) {
			t.Errorf("parseOpHeld(%q) = %+v, want none", v, got)
		}
	}
}
