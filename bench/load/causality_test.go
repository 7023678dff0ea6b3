package load

import (
	"io"
	"math"
	"net"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/mosquittotest"
)

func causalityConfig(url string, gaps ...time.Duration) Config {
	return Config{URL: url, Scenario: Causality, Trials: 8, Gaps: gaps, Idle: 60 * time.Millisecond, Quiet: 5 * time.Millisecond}
}

// checkCausality checks the bookkeeping every causality run must get right.
func checkCausality(t *testing.T, res *Result, trials int, gaps ...time.Duration) {
	t.Helper()
	c := res.Causality
	if c == nil || len(c.Gaps) != len(gaps) || c.Pairs != 13 {
		t.Fatalf("causality result %+v", c)
	}
	for i, g := range c.Gaps {
		if g.Gap != float64(gaps[i])/1e3 || g.Trials != trials || g.Inversions < 0 || g.Inversions > trials {
			t.Errorf("gap %d: %+v", i, g)
		}
		if want := 1000 * float64(g.Inversions) / float64(trials); math.Abs(g.PerThousand-want) > 0.05 {
			t.Errorf("gap %d: %v per 1,000 for %d of %d", i, g.PerThousand, g.Inversions, trials)
		}
		if g.GapMean < g.Gap {
			t.Errorf("gap %d: achieved %.1f µs, shorter than asked", i, g.GapMean)
		}
		if g.Puback == nil || g.Puback.Count != uint64(trials) {
			t.Errorf("gap %d: PUBACK latency %+v", i, g.Puback)
		}
	}
}

func TestCausality(t *testing.T) {
	// Serial: it counts inversions at gaps of 50 µs, which tests beside
	// it would widen.
	gaps := []time.Duration{50 * time.Microsecond, 2 * time.Millisecond}
	t.Run("roost", func(t *testing.T) {
		res := run(t, causalityConfig(startBroker(t, broker.Options{}), gaps...))
		checkCausality(t, res, 8, gaps...)
	})
	// mosquitto handles events in one thread in the order epoll reports
	// them, which is the order they arrived: it never inverts.
	t.Run("mosquitto", func(t *testing.T) {
		m := mosquittotest.Start(t)
		res := run(t, causalityConfig("mqtt://"+m.Addr, gaps...))
		checkCausality(t, res, 8, gaps...)
		for _, g := range res.Causality.Gaps {
			if g.Inversions != 0 {
				t.Errorf("mosquitto: %d inversions at %v µs", g.Inversions, g.Gap)
			}
		}
	})
	// A SUBSCRIBE held back longer than the gap reaches the broker after
	// the PUBLISH: every trial must count as an inversion.
	t.Run("detects inversions", func(t *testing.T) {
		url := startBroker(t, broker.Options{})
		cfg := causalityConfig(url, 50*time.Microsecond)
		cfg.Trials = 3
		cfg.SubURL = "mqtt://" + delayingProxy(t, url[len("mqtt://"):], 100*time.Millisecond)
		res := run(t, cfg)
		checkCausality(t, res, 3, 50*time.Microsecond)
		if g := res.Causality.Gaps[0]; g.Inversions != 3 || g.PerThousand != 1000 {
			t.Errorf("SUBSCRIBE delayed 100 ms, yet %+v", g)
		}
	})
}

// delayingProxy forwards connections to addr, holding back what clients
// send by delay (what the broker sends goes straight back). It returns its
// address; it stops with the test.
func delayingProxy(t *testing.T, addr string, delay time.Duration) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				continue
			}
			t.Cleanup(func() { c.Close(); b.Close() })
			go io.Copy(c, b)
			go forwardLate(b, c, delay)
		}
	}()
	return ln.Addr().String()
}

// forwardLate copies from src to dst, each chunk delay after it was read,
// in order.
func forwardLate(dst, src net.Conn, delay time.Duration) {
	type chunk struct {
		at time.Time
		b  []byte
	}
	ch := make(chan chunk, 64)
	go func() {
		defer close(ch)
		for {
			buf := make([]byte, 4096)
			n, err := src.Read(buf)
			if n > 0 {
				ch <- chunk{time.Now(), buf[:n]}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range ch {
		time.Sleep(time.Until(c.at.Add(delay)))
		if _, err := dst.Write(c.b); err != nil {
			return
		}
	}
	dst.Close()
}
