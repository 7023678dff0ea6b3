package cluster

import "testing"

// An adoption from the stream takes the id's unread mark only as the
// session goes in the server: a release request that took it first
// supersedes the adoption, and one that comes after finds the hand-over
// wait set under the same lock (never "nothing to hand over" while the
// session is on its way in: TestClusterTransports/NodeKill, Session
// Present 0).
func TestBeginAdopt(t *testing.T) {
	o := &owners{unread: map[string]bool{}}
	if w := o.beginAdopt("a"); w != nil {
		t.Fatal("adopted without the unread mark (a release request took it)")
	}
	o.unread["a"] = true
	w := o.beginAdopt("a")
	if w == nil {
		t.Fatal("not adopted with the unread mark")
	}
	if o.takeUnread("a") {
		t.Error("the mark stayed: a release request would send the claimer to the stream too")
	}
	o.mu.Lock()
	ch := o.heldPending["a"]
	o.mu.Unlock()
	if ch == nil {
		t.Fatal("no hand-over wait set with the mark taken")
	}
	w.finish()
	select {
	case <-ch:
	default:
		t.Error("the hand-over wait not ended once the adoption finished")
	}
}
