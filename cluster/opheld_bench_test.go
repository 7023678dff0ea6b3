package cluster

import (
	"fmt"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
)

// BenchmarkPackMsg is a session pack's stream message (publishMore's
// packMsg): one op (a delivered message's QueueDel, the hot path: an op
// per delivered QoS 1/2 message) and a pack of eight, without a held
// place (every op outside a silence's window before h1132) and with one
// (opHeldHeader, every op since: TestReproOpHeldKilled).
func BenchmarkPackMsg(b *testing.B) {
	s := &sessions{n: &Node{cfg: Config{Node: "n2", Partitions: DefaultPartitions}}}
	op := broker.Op{Kind: broker.OpQueueDel, ClientID: "ps3", Delivery: broker.StoredDelivery{Seq: 27}}
	body, err := encodeOpBody(&op, "")
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{1, 8} {
		for _, held := range []uint64{0, 127} {
			ops, epochs := make([]repOp, n), make([]uint64, n)
			for i := range ops {
				ops[i] = repOp{id: "ps3", kind: op.Kind, body: body, msgID: "2da40c728e75d200.k9", made: time.Now(), held: held}
				epochs[i] = 12
			}
			b.Run(fmt.Sprintf("ops=%d/held=%v", n, held > 0), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if m := s.packMsg(ops, epochs); len(m.Data) == 0 {
						b.Fatal("empty pack")
					}
				}
			})
		}
	}
}
