package flood

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/eventually"
	"github.com/roost-mqtt/roost/packet"
)

// cycle is one flood connection: connect, CONNECT, CONNACK, then one of
// three endings, so the broker sees clean, abrupt and early closes.
func cycle(addr string, i int, src net.IP) error {
	nc, err := dialFrom(src, addr)
	if err != nil {
		return err
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	v := []packet.Version{packet.V311, packet.V5}[i%2]
	b, _ := (&packet.Connect{ProtocolVersion: v, ClientID: "", CleanStart: true, KeepAlive: 30}).Encode(nil, v)
	if i%7 == 0 {
		// Close right after CONNECT, before reading CONNACK.
		_, err := nc.Write(b)
		return err
	}
	if _, err := nc.Write(b); err != nil {
		return err
	}
	p, err := packet.NewReader(bufio.NewReader(nc), 1<<16).ReadPacket(v)
	if err != nil {
		return err
	}
	if ack, ok := p.(*packet.Connack); !ok || ack.ReasonCode != 0 {
		return io.ErrUnexpectedEOF
	}
	if i%3 == 0 {
		return nil // abrupt close: no DISCONNECT
	}
	b, _ = (&packet.Disconnect{}).Encode(nil, v)
	_, err = nc.Write(b)
	return err
}

// TestConnectFlood: several goroutines connect, CONNECT and disconnect as
// fast as they can (3,000 cycles; 30,000 with -flood.big) from 16 source
// addresses while a victim client keeps doing QoS 1 round trips. The
// victim's round trips all succeed within a generous bound, and afterwards
// the broker's connection count and the process's goroutines are back to
// where they were.
func TestConnectFlood(t *testing.T) {
	s, addr := startBroker(t, broker.Options{})
	vic := newVictim(t, addr, "connect-flood")
	vic.roundTrip(t, 2*time.Second)
	baseConns := s.Stats().Connected
	baseTotal := s.Stats().ConnectsTotal
	baseG := runtime.NumGoroutine()

	total := scale(3000)
	const workers, sources = 8, 16
	var next, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= total {
					return
				}
				if err := cycle(addr, i, srcIP(i, sources)); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	var worst time.Duration
	for flooding := true; flooding; {
		select {
		case <-done:
			flooding = false
		default:
		}
		worst = max(worst, vic.roundTrip(t, 3*time.Second))
		time.Sleep(5 * time.Millisecond)
	}
	elapsed := time.Since(start)
	t.Logf("%d connect cycles in %v (%.0f/s), %d failed; victim: %s", total, elapsed.Round(time.Millisecond),
		float64(total)/elapsed.Seconds(), failed.Load(), vic.summary())
	if n := failed.Load(); n > 0 {
		t.Errorf("%d of %d flood connections failed, first: %v", n, total, firstErr.Load())
	}
	if len(vic.rtts) < 5 {
		t.Errorf("victim managed only %d round trips during the flood", len(vic.rtts))
	}

	// Every CONNECT that got as far as CONNACK was counted, and all of
	// them are gone again.
	if got := s.Stats().ConnectsTotal - baseTotal; got < uint64(total*6/7) {
		t.Errorf("ConnectsTotal grew by %d, want at least %d", got, total*6/7)
	}
	eventually.NoError(t, 10*time.Second, func() error {
		if st := s.Stats(); st.Connected != baseConns || st.Sessions != 1 {
			return fmt.Errorf("Connected = %d and %d sessions after the flood, want %d and 1 (the victim's)", st.Connected, st.Sessions, baseConns)
		}
		return nil
	})
	goroutinesBackTo(t, baseG, 10*time.Second)
	vic.roundTrip(t, time.Second)
}

// TestConnectFloodPerIPLimits: the same flood against a broker with the
// per-address limits an internet-facing broker should set. Refused
// connections are closed at once and cost nothing lasting; the victim,
// from its own address, is unaffected.
func TestConnectFloodPerIPLimits(t *testing.T) {
	s, addr := startBroker(t, broker.Options{MaxConnectionsPerIP: 4, ConnectRatePerIP: 50})
	vic := newVictim(t, addr, "limited-flood")
	baseG := runtime.NumGoroutine()
	baseConns := s.Stats().Connected

	total := scale(2000)
	var ok, refused atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < total; i += 4 {
				if i%7 == 0 {
					continue // only cycles that wait for CONNACK tell
				}
				// All from one address: the limits must bite.
				if cycle(addr, i, srcIP(0, 1)) == nil {
					ok.Add(1)
				} else {
					refused.Add(1)
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for flooding := true; flooding; {
		select {
		case <-done:
			flooding = false
		default:
		}
		vic.roundTrip(t, 3*time.Second)
		time.Sleep(5 * time.Millisecond)
	}
	elapsed := time.Since(start)
	t.Logf("%d cycles from one address in %v: %d completed, %d refused; victim: %s", total,
		elapsed.Round(time.Millisecond), ok.Load(), refused.Load(), vic.summary())
	// 50/s with a burst of 100: far fewer than total may pass.
	if maxOK := int64(100 + 50*elapsed.Seconds() + 50); ok.Load() > maxOK {
		t.Errorf("%d connections passed a 50/s limit in %v (at most ~%d expected)", ok.Load(), elapsed, maxOK)
	}
	if refused.Load() == 0 {
		t.Error("no connection was refused")
	}
	eventually.NoError(t, 10*time.Second, func() error {
		if n := s.Stats().Connected; n != baseConns {
			return fmt.Errorf("Connected = %d after the flood, want %d", n, baseConns)
		}
		return nil
	})
	goroutinesBackTo(t, baseG, 10*time.Second)
}
