package broker

import (
	"fmt"
	"testing"

	"github.com/roost-mqtt/roost/packet"
)

// BenchmarkDeliverRemoteQueued delivers a forwarded QoS 1 message to an
// offline persistent session, its queue taking it and one drop keeping
// it short: a forward's cost on its receiving node, without a place (as
// every forward had before session 27 unless a session caught up) and
// with one (every forward since: package cluster, place.go). The place
// costs the message its msgExt.
func BenchmarkDeliverRemoteQueued(b *testing.B) {
	for _, placed := range []bool{false, true} {
		b.Run(fmt.Sprintf("place=%v", placed), func(b *testing.B) {
			s, _ := startServer(b, Options{MaxQueued: 64})
			s.Adopt(&StoredSession{ClientID: "q", Expiry: 600,
				Subs: []StoredSub{{Filter: "t/#", Opts: packet.SubOptions{QoS: 1}}}})
			payload := make([]byte, 64)
			src := "n2\x000123456789abcdef" // one string per peer incarnation (cluster placeSources)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				rm := &RemoteMessage{Topic: "t/a", Payload: payload, QoS: 1, Groups: []string{}}
				if placed {
					rm.Place = Place{Source: src, Seq: uint64(i) + 1}
				}
				s.DeliverRemote(rm)
			}
		})
	}
}
