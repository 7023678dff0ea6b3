package cluster

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestLeaseFrom: a lease only when the leader heard from every other
// replica recently; it ends raftMinElection after the oldest contact, less
// the margin, counted from when the node asked.
func TestLeaseFrom(t *testing.T) {
	asked := time.Now()
	peer := func(active time.Duration, offline bool) *jetstream.PeerInfo {
		return &jetstream.PeerInfo{Name: "n", Active: active, Offline: offline, Current: true}
	}
	for _, tc := range []struct {
		name string
		ci   *jetstream.ClusterInfo
		want time.Duration // from asked; 0: no lease
	}{
		{"one server", nil, raftMinElection - leaseMargin},
		{"no leader", &jetstream.ClusterInfo{Replicas: []*jetstream.PeerInfo{peer(time.Millisecond, false)}}, 0},
		{"all recent", &jetstream.ClusterInfo{Leader: "n1", Replicas: []*jetstream.PeerInfo{peer(300*time.Millisecond, false), peer(time.Second, false)}},
			raftMinElection - leaseMargin - time.Second},
		{"one silent", &jetstream.ClusterInfo{Leader: "n1", Replicas: []*jetstream.PeerInfo{peer(time.Millisecond, false), peer(maxActive+time.Millisecond, false)}}, 0},
		{"one offline", &jetstream.ClusterInfo{Leader: "n1", Replicas: []*jetstream.PeerInfo{peer(time.Millisecond, false), peer(time.Millisecond, true)}}, 0},
		// nats-server reports a replica it never heard from as active 0 ago.
		{"one never seen", &jetstream.ClusterInfo{Leader: "n1", Replicas: []*jetstream.PeerInfo{peer(time.Millisecond, false), peer(0, false)}}, 0},
	} {
		until, ok := leaseFrom(asked, tc.ci)
		switch {
		case tc.want == 0 && ok:
			t.Errorf("%s: lease until +%v, want none", tc.name, until.Sub(asked))
		case tc.want != 0 && !ok:
			t.Errorf("%s: no lease, want one until +%v", tc.name, tc.want)
		case tc.want != 0 && until.Sub(asked) != tc.want:
			t.Errorf("%s: lease until +%v, want +%v", tc.name, until.Sub(asked), tc.want)
		}
	}
}

// TestIsMark: the read markers' subjects, and no topic's.
func TestIsMark(t *testing.T) {
	for subj, want := range map[string]bool{
		retMarkPrefix + ".n1":                 true,
		retMarkPrefix:                         false,
		retMarkPrefix + "x.n1":                false,
		TopicSubject(retPrefix, "%mark/n1"):   false, // a topic level "%mark" is escaped
		TopicSubject(retPrefix, "a/b"):        false,
		TopicSubject(retPrefix, "%25mark/n1"): false,
	} {
		if got := isMark(subj); got != want {
			t.Errorf("isMark(%q) = %v, want %v", subj, got, want)
		}
	}
}
