package broker

import (
	"fmt"
	"testing"

	"github.com/roost-mqtt/roost/packet"
)

// BenchmarkRouteShared routes messages to two share groups of four
// offline members each and one plain subscriber, as a first routing:
// without an Origin, and under one (a persistent publisher's QoS 2 in a
// cluster), whose group checks (originSeen) a resend's claims extend.
// The queues are full after the first messages: what is measured is the
// match and the pick, not the copies.
func BenchmarkRouteShared(b *testing.B) {
	for _, origin := range []bool{false, true} {
		b.Run(fmt.Sprintf("origin=%v", origin), func(b *testing.B) {
			s, _ := startServer(b, Options{MaxQueued: 1})
			opts := packet.SubOptions{QoS: 2}
			s.Adopt(&StoredSession{ClientID: "plain", Expiry: 600, Subs: []StoredSub{{Filter: "r/+", Opts: opts}}})
			for i := range 8 {
				f := fmt.Sprintf("$share/g%d/r/+", i%2)
				s.Adopt(&StoredSession{ClientID: fmt.Sprint("m", i), Expiry: 600, Subs: []StoredSub{{Filter: f, Opts: opts}}})
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				msg := &Message{ID: s.msgID.Add(1), Topic: "r/x", QoS: 2}
				var o Origin
				if origin {
					o = Origin{ClientID: "pub", PacketID: uint16(i), Nonce: uint64(i) + 1}
				}
				s.routeOrigin(msg, o)
			}
		})
	}
}

// BenchmarkRouteOriginPlain routes a persistent publisher's QoS 2
// messages, each under its own Origin, to one plain subscriber: every
// Origin routed has an entry in originSeen (the mark of its first
// routing, onceCheck.since), whether or not a share group gets it.
func BenchmarkRouteOriginPlain(b *testing.B) {
	s, _ := startServer(b, Options{MaxQueued: 1})
	s.Adopt(&StoredSession{ClientID: "plain", Expiry: 600, Subs: []StoredSub{{Filter: "r/+", Opts: packet.SubOptions{QoS: 2}}}})
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		msg := &Message{ID: s.msgID.Add(1), Topic: "r/x", QoS: 2}
		s.routeOrigin(msg, Origin{ClientID: "pub", PacketID: uint16(i), Nonce: uint64(i) + 1})
	}
}
