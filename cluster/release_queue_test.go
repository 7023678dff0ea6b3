package cluster

import (
	"testing"
	"time"
)

// TestReleaseQueueOrderPerID: release requests for one client id are
// answered one after the other, in the order they came, by one handler;
// another id gets a handler of its own at once; an id whose handler ended
// gets a new one with its next request.
func TestReleaseQueueOrderPerID(t *testing.T) {
	var q releaseQueue
	at := time.Unix(0, 0)
	req := func(i int) releaseReq { return releaseReq{at: at.Add(time.Duration(i))} }
	if !q.add("a", req(1)) {
		t.Fatal("first request for a: no handler started")
	}
	if q.add("a", req(2)) || q.add("a", req(3)) {
		t.Fatal("a request for a while its handler runs started another handler")
	}
	if !q.add("b", req(4)) {
		t.Fatal("b waits behind a: want a handler of its own")
	}
	for _, want := range []int{2, 3} {
		r, ok := q.next("a")
		if !ok || r.at != req(want).at {
			t.Fatalf("a's handler got %v, %v; want request %d", r.at, ok, want)
		}
	}
	if _, ok := q.next("a"); ok {
		t.Fatal("a's handler got a request never added")
	}
	if !q.add("a", req(5)) {
		t.Fatal("a request for a after its handler ended: no handler started")
	}
	if q.add("b", req(6)) {
		t.Fatal("b's handler still runs: want the request queued")
	}
	q.drop("b")
	if _, ok := q.next("b"); ok {
		t.Fatal("b's requests still queued after drop")
	}
}
