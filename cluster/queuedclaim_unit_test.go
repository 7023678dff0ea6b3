package cluster

import "testing"

// TestQueuedGroup: a queued delivery is claimed for the one share group
// of its session whose filter matches its topic, and for none when two
// do (which one it came through is not known).
func TestQueuedGroup(t *testing.T) {
	groups := map[string]string{
		"$share/g0/t/#": "g0\x00t/#",
		"$share/g1/u/+": "g1\x00u/+",
		"$share/g2/u/1": "g2\x00u/1",
	}
	for _, tc := range []struct{ topic, want string }{
		{"t/1", "g0\x00t/#"},
		{"t", "g0\x00t/#"}, // '#' matches the parent level too
		{"u/2", "g1\x00u/+"},
		{"u/1", ""}, // g1 and g2
		{"v/1", ""},
	} {
		if got := queuedGroup(groups, tc.topic); got != tc.want {
			t.Errorf("queuedGroup(%q) = %q, want %q", tc.topic, got, tc.want)
		}
	}
}

// TestServedClaimNamesNoReader: the claim a first routing, a resend or an
// adoption makes for a member is never taken by a reader for one made for
// its own session (ownClaim compares the claim's data with the member).
func TestServedClaimNamesNoReader(t *testing.T) {
	for _, id := range []string{"", "g0m0", "a/b"} {
		if servedClaim(id) == id {
			t.Errorf("servedClaim(%q) equals the member's name", id)
		}
	}
	if servedClaim("a") == servedClaim("b") {
		t.Error("two members' claims are the same")
	}
}
