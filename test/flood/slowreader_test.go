package flood

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/eventually"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// dialSmallBuffer connects with a 4 KiB receive buffer, set before the
// handshake so the advertised window stays small.
func dialSmallBuffer(t *testing.T, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: srcIP(7, 16)}, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

// slowReader connects, subscribes to busy/0 at QoS 0 and busy/1 at QoS 1,
// reads the SUBACK and then never reads again.
func slowReader(t *testing.T, addr string) net.Conn {
	t.Helper()
	nc := dialSmallBuffer(t, addr)
	c := &mqtttest.Client{T: t, NC: nc, R: packet.NewReader(nc, 1<<20), V: packet.V5}
	c.Connect(&packet.Connect{ClientID: "slow-reader", CleanStart: true})
	c.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{
		{Filter: "busy/0", Options: packet.SubOptions{QoS: 0}},
		{Filter: "busy/1", Options: packet.SubOptions{QoS: 1}},
	}})
	if _, ok := c.Next(2 * time.Second).(*packet.Suback); !ok {
		t.Fatal("no SUBACK")
	}
	return nc
}

// publishFlatOut publishes 4 KiB messages as fast as the socket takes them
// until stop closes: three QoS 0 to busy/0 for each QoS 1 to busy/1. It
// discards everything the broker sends back. It returns the number sent.
func publishFlatOut(t *testing.T, addr string, stop <-chan struct{}) (sent *atomic.Int64, done <-chan struct{}) {
	t.Helper()
	nc, err := dialFrom(srcIP(8, 16), addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	c := &mqtttest.Client{T: t, NC: nc, R: packet.NewReader(nc, 1<<20), V: packet.V5}
	c.Connect(&packet.Connect{ClientID: "flat-out", CleanStart: true})
	go io.Copy(io.Discard, bufio.NewReader(nc)) // PUBACKs
	sent = new(atomic.Int64)
	ch := make(chan struct{})
	payload := make([]byte, 4096)
	go func() {
		defer close(ch)
		var id uint16
		var batch []byte
		for {
			select {
			case <-stop:
				return
			default:
			}
			batch = batch[:0]
			for i := range 64 {
				p := &packet.Publish{Topic: "busy/0", Payload: payload}
				if i%4 == 3 {
					id = id%65535 + 1
					p = &packet.Publish{Topic: "busy/1", QoS: 1, PacketID: id, Payload: payload}
				}
				batch, _ = p.Encode(batch, packet.V5)
			}
			nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err := nc.Write(batch); err != nil {
				return
			}
			sent.Add(64)
		}
	}()
	return sent, ch
}

// TestSlowReader: a subscriber at QoS 0 and QoS 1 that never reads its
// socket (4 KiB receive buffer) while a publisher publishes to it flat out
// for 2 s (20 s with -flood.big) and until both drop policies have acted. Another client keeps getting prompt
// round trips; the broker's heap stays bounded (the slow consumer's output
// is capped at 4 MiB of QoS 0, its QoS 1 by the inflight window and the
// queue); what is not delivered is counted by reason; and closing the slow
// reader releases everything.
func TestSlowReader(t *testing.T) {
	s, addr := startBroker(t, broker.Options{SysInterval: 200 * time.Millisecond})
	vic := newVictim(t, addr, "slow-reader-victim")
	baseG := runtime.NumGoroutine()
	baseHeap := heapInuse()
	slow := slowReader(t, addr)

	stop := make(chan struct{})
	sent, published := publishFlatOut(t, addr, stop)
	var peak atomic.Uint64
	var sampling sync.WaitGroup
	sampling.Add(1)
	go func() {
		defer sampling.Done()
		for {
			select {
			case <-published:
				return
			case <-time.After(25 * time.Millisecond):
				if h := heapNow(); h > peak.Load() {
					peak.Store(h)
				}
			}
		}
	}()
	// Flood for floodFor and until both drop policies have acted, which
	// takes longer on a slow machine; 20 s at most.
	floodFor := scale(2 * time.Second)
	start := time.Now()
	dropping := func() bool {
		d := s.Stats().Dropped
		return d[broker.DropSlowConsumer] > 0 && d[broker.DropQueueFull] > 0
	}
	for time.Since(start) < floodFor || !dropping() && time.Since(start) < 20*time.Second {
		vic.roundTrip(t, 3*time.Second)
		time.Sleep(10 * time.Millisecond)
	}
	floodFor = time.Since(start)
	close(stop)
	<-published
	sampling.Wait()

	st := s.Stats()
	grew := int64(peak.Load()) - int64(baseHeap)
	t.Logf("published %d messages (%.0f/s) in %v; heap peak +%.1f MiB over %.1f MiB; queued %d, inflight %d; dropped %v; victim: %s",
		sent.Load(), float64(sent.Load())/floodFor.Seconds(), floodFor, float64(grew)/mib, float64(baseHeap)/mib,
		st.Queued, st.Inflight, st.Dropped, vic.summary())
	if grew > 96*mib {
		t.Errorf("heap grew %.1f MiB during the flood: the slow reader's output is not bounded", float64(grew)/mib)
	}
	if st.Dropped[broker.DropSlowConsumer] == 0 {
		t.Error("no QoS 0 message dropped for the slow consumer")
	}
	if st.Dropped[broker.DropQueueFull] == 0 {
		t.Error("no QoS 1 message dropped for a full queue")
	}
	// The counts are of all sessions: the victim's last delivery is
	// inflight until the broker reads its PUBACK (65 was seen under CPU
	// load). The slow reader acknowledges nothing, so its own counts
	// never fall: a real overflow still fails here.
	eventually.NoError(t, 5*time.Second, func() error {
		if st := s.Stats(); st.Inflight > 64 || st.Queued > 1000 {
			return fmt.Errorf("inflight %d, queued %d: above MaxInflight 64 / MaxQueued 1000", st.Inflight, st.Queued)
		}
		return nil
	})
	// Live memory while the slow reader is still connected: its output
	// buffer (4 MiB of QoS 0 plus the write in progress), 64 inflight and
	// 1000 queued 4 KiB messages.
	live := int64(heapInuse()) - int64(baseHeap)
	t.Logf("heap after a GC, slow reader still connected: +%.1f MiB", float64(live)/mib)
	if live > 32*mib {
		t.Errorf("heap %.1f MiB over the baseline after the flood, with the slow reader still connected", float64(live)/mib)
	}

	// The drops are visible in $SYS, as mosquitto names the figure.
	sys := mqtttest.Dial(t, addr, packet.V311)
	sys.Connect(&packet.Connect{ClientID: "sys-watcher", CleanStart: true})
	sys.Subscribe("$SYS/broker/publish/messages/dropped", 0)
	want := st.Dropped[broker.DropSlowConsumer] + st.Dropped[broker.DropQueueFull]
	mqtttest.Eventually(t, 3*time.Second, func() bool {
		p, err := sys.Read(time.Second)
		pub, ok := p.(*packet.Publish)
		if err != nil || !ok {
			return false
		}
		n, err := strconv.ParseUint(string(pub.Payload), 10, 64)
		return err == nil && n >= want
	})
	sys.NC.Close()
	// And by reason, which mosquitto does not split.
	sys = mqtttest.Dial(t, addr, packet.V311)
	sys.Connect(&packet.Connect{ClientID: "sys-watcher-2", CleanStart: true})
	sys.Subscribe("$SYS/broker/publish/messages/dropped/slow_consumer", 0)
	mqtttest.Eventually(t, 3*time.Second, func() bool {
		p, err := sys.Read(time.Second)
		pub, ok := p.(*packet.Publish)
		if err != nil || !ok {
			return false
		}
		n, err := strconv.ParseUint(string(pub.Payload), 10, 64)
		return err == nil && n >= st.Dropped[broker.DropSlowConsumer] && n > 0
	})
	sys.NC.Close()

	slow.Close()
	mqtttest.Eventually(t, 10*time.Second, func() bool { return s.Stats().Queued == 0 && s.Stats().Inflight == 0 })
	vic.roundTrip(t, time.Second)
	goroutinesBackTo(t, baseG+2, 10*time.Second) // the publisher and its reader are still open
}
