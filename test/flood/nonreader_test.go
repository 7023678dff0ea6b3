package flood

import (
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// TestNonReaderRequests: a client that sends requests flat out (PINGREQ,
// QoS 1 PUBLISH, SUBSCRIBE) and never reads its socket. Every request has
// an answer, and the answers cannot be dropped like QoS 0 deliveries, so
// the broker stops reading from such a client while its unwritten output
// is over the bound (broker/out.go, waitOutput) rather than buffer answers
// without bound.
func TestNonReaderRequests(t *testing.T) {
	s, addr := startBroker(t, broker.Options{})
	vic := newVictim(t, addr, "non-reader-victim")
	baseHeap := heapInuse()
	baseG := runtime.NumGoroutine()
	nc := dialSmallBuffer(t, addr)
	c := &mqtttest.Client{T: t, NC: nc, R: packet.NewReader(nc, 1<<20), V: packet.V311}
	c.Connect(&packet.Connect{ClientID: "non-reader", CleanStart: true})

	// 64 KiB of PINGREQs per write: 32768 requests, 32768 answers.
	batch := make([]byte, 0, 64<<10)
	for len(batch) < cap(batch) {
		batch = append(batch, 0xC0, 0x00)
	}
	var sent atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			nc.SetWriteDeadline(time.Now().Add(time.Second))
			n, err := nc.Write(batch)
			sent.Add(int64(n))
			if err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					continue // the broker stopped reading: good
				}
				return // or closed the connection: also good
			}
		}
	}()
	var peak uint64
	start := time.Now()
	for time.Since(start) < scale(3*time.Second) {
		vic.roundTrip(t, 3*time.Second)
		peak = max(peak, heapNow())
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	<-done
	grew := int64(peak) - int64(baseHeap)
	live := int64(heapInuse()) - int64(baseHeap)
	t.Logf("sent %.1f MiB of PINGREQs without reading; heap peak +%.1f MiB, after GC +%.1f MiB; victim: %s",
		float64(sent.Load())/mib, float64(grew)/mib, float64(live)/mib, vic.summary())
	if live > 32*mib {
		t.Errorf("the broker holds %.1f MiB for one client that does not read its answers", float64(live)/mib)
	}
	nc.Close()
	mqtttest.Eventually(t, 10*time.Second, func() bool { return s.Stats().Connected == 1 })
	goroutinesBackTo(t, baseG, 10*time.Second)
}
