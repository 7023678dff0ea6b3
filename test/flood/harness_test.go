package flood

import (
	"flag"
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/brokertest"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

var big = flag.Bool("flood.big", false, "run the heavier flood variants")

// scale multiplies a count or duration by ten under -flood.big.
func scale[T int | time.Duration](n T) T {
	if *big {
		return n * 10
	}
	return n
}

// startBroker runs a broker with opts on 127.0.0.1:0 until the test ends.
func startBroker(t *testing.T, opts broker.Options) (*broker.Server, string) {
	t.Helper()
	return brokertest.Start(t, opts)
}

// srcIP is the i-th of n loopback source addresses, 127.0.0.2 and up.
func srcIP(i, n int) net.IP { return net.IPv4(127, 0, 0, byte(2+i%n)) }

// dialFrom opens a TCP connection to addr from source address ip.
func dialFrom(ip net.IP, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 5 * time.Second}
	return d.Dial("tcp", addr)
}

// victim is a client that keeps doing QoS 1 round trips through the broker
// while a flood runs: PUBLISH to its own topic, then wait for the PUBACK and
// the delivery.
type victim struct {
	c     *mqtttest.Client
	topic string
	id    uint16
	rtts  []time.Duration
}

func newVictim(t *testing.T, addr, name string) *victim {
	c := mqtttest.Dial(t, addr, packet.V5)
	c.Connect(&packet.Connect{ClientID: name, CleanStart: true})
	v := &victim{c: c, topic: "victim/" + name}
	c.Subscribe(v.topic, 1)
	return v
}

// roundTrip does one QoS 1 round trip, failing the test if it does not
// complete within limit.
func (v *victim) roundTrip(t *testing.T, limit time.Duration) time.Duration {
	t.Helper()
	v.id = v.id%60000 + 1
	start := time.Now()
	v.c.Send(&packet.Publish{Topic: v.topic, QoS: 1, PacketID: v.id, Payload: []byte("ping")})
	acked, delivered := false, false
	for !acked || !delivered {
		p, err := v.c.Read(limit - time.Since(start))
		if err != nil {
			t.Fatalf("victim round trip %d: %v after %v (acked=%v delivered=%v)", len(v.rtts)+1, err, time.Since(start), acked, delivered)
		}
		switch p := p.(type) {
		case *packet.Puback:
			acked = acked || p.PacketID == v.id
		case *packet.Publish:
			delivered = true
			if p.QoS > 0 {
				v.c.Send(&packet.Puback{PacketID: p.PacketID})
			}
		}
	}
	d := time.Since(start)
	v.rtts = append(v.rtts, d)
	return d
}

// summary returns the count, median and worst round trip.
func (v *victim) summary() string {
	if len(v.rtts) == 0 {
		return "no round trips"
	}
	s := append([]time.Duration(nil), v.rtts...)
	for i := 1; i < len(s); i++ { // insertion sort: a few thousand at most
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return fmt.Sprintf("%d round trips, median %v, p99 %v, max %v", len(s), s[len(s)/2], s[len(s)*99/100], s[len(s)-1])
}

// goroutinesBackTo waits until the process has at most base goroutines
// (plus slack for runtime and test helpers), failing after within.
func goroutinesBackTo(t *testing.T, base int, within time.Duration) {
	t.Helper()
	const slack = 5
	deadline := time.Now().Add(within)
	for {
		n := runtime.NumGoroutine()
		if n <= base+slack {
			t.Logf("goroutines: %d (baseline %d)", n, base)
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%d goroutines %v after the flood, baseline %d: leak?\n%s", n, within, base, tailBytes(buf, 8000))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func tailBytes(b []byte, n int) string {
	if len(b) > n {
		b = b[:n]
	}
	return string(b)
}

// heapInuse is the heap in use after a garbage collection.
func heapInuse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// heapNow is the heap in use without forcing a collection (cheap enough
// to sample during a flood).
func heapNow() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

const mib = 1 << 20
