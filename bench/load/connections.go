package load

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// connections opens Conns idle connections, Batch at a time, holds them
// for Duration and closes them. An idle connection is only its net.Conn:
// no goroutine, no buffer, so twenty thousand cost the bench process
// little more than their file descriptors.
func (r *runner) connections(ctx context.Context) (*Result, error) {
	c := r.cfg
	st := &ConnStats{Requested: c.Conns, Attempted: c.Conns}
	r.res.Connections = st
	r.capConns(st, 0)

	samplerCtx, stopSampler := context.WithCancel(ctx)
	var samplerDone sync.WaitGroup
	samplerDone.Go(func() { r.sampler(samplerCtx) })
	defer func() { stopSampler(); samplerDone.Wait() }()
	if r.res.Broker != nil {
		r.res.Broker.RSSBeforeKiB = r.sampleRSS()
	}

	conns := make([]net.Conn, 0, st.Attempted)
	defer func() {
		// DISCONNECT first so the broker logs a clean close, not an error.
		for _, nc := range conns {
			nc.SetWriteDeadline(time.Now().Add(time.Second))
			nc.Write([]byte{0xE0, 0})
			nc.Close()
		}
		r.conns.Store(0)
	}()
	start := time.Now()
	cpu := startCPU(c.PID)
	var failed atomic.Int64
	var firstErr atomic.Pointer[error]
	for from := 0; from < st.Attempted && ctx.Err() == nil; from += c.Batch {
		batch := r.openIdle(ctx, from, min(c.Batch, st.Attempted-from), &failed, &firstErr)
		conns = append(conns, batch...)
		if r.res.Broker != nil {
			st.Steps = append(st.Steps, ConnStep{Conns: len(conns), RSSKiB: r.sampleRSS()})
		}
	}
	st.Elapsed = time.Since(start).Seconds()
	var brokerCPU float64
	r.res.LoadCPU, brokerCPU = cpu.stop()
	st.Opened, st.Failed = len(conns), int(failed.Load())
	if st.Elapsed > 0 {
		st.Rate = float64(st.Opened) / st.Elapsed
	}
	if p := firstErr.Load(); p != nil {
		st.FirstError = (*p).Error()
	}

	r.phase.Store(phaseHold)
	held := time.Now()
	if b := r.res.Broker; b != nil && c.Duration >= Settle {
		// What an operator sees soon after a storm (Roost's trim looks
		// every 500 ms, mosquitto has none).
		r.rssMax.Store(0) // the maximum while all are open, not the before
		sleep(ctx, Settle)
		b.RSSSettledKiB = r.sampleRSS()
	}
	sleep(ctx, c.Duration-time.Since(held))
	st.Held = time.Since(held).Seconds()
	if b := r.res.Broker; b != nil {
		b.RSSAfterKiB = r.sampleRSS()
		b.RSSMaxKiB = r.rssMax.Load()
		b.CPU = brokerCPU
		perConn := func(rss int64) float64 {
			if st.Opened == 0 || rss == 0 {
				return 0
			}
			return float64(rss-b.RSSBeforeKiB) / float64(st.Opened)
		}
		b.KiBPerConn = perConn(b.RSSAfterKiB)
		b.KiBPerConnSettled = perConn(b.RSSSettledKiB)
		b.KiBPerConnMax = perConn(b.RSSMaxKiB)
	}
	return r.res, ctx.Err()
}

// Settle is how long after the last connection opened Connections
// samples the broker's RSS for KiBPerConnSettled.
const Settle = 2 * time.Second

// capConns lowers the count to what this process can open beside extra
// other connections, and warns when the broker's own limit is lower.
func (r *runner) capConns(st *ConnStats, extra int) {
	budget, why := fdBudget(r.cfg.FDLimit)
	if avail := budget - fdReserve - extra; st.Attempted > avail {
		st.Attempted = max(avail, 0)
		r.note("capped at %d connections (requested %d): the bench process needs one file per connection, %s, and it keeps %d for itself",
			st.Attempted, st.Requested, why, fdReserve)
	}
	if r.cfg.PID > 0 {
		if bb, bwhy, ok := processFDBudget(r.cfg.PID); ok && st.Attempted > bb {
			r.note("%s: expect it to refuse connections beyond about %d", bwhy, bb)
		}
	}
}

// openIdle opens n connections concurrently and returns those that
// succeeded.
func (r *runner) openIdle(ctx context.Context, from, n int, failed *atomic.Int64, firstErr *atomic.Pointer[error]) []net.Conn {
	out := make([]net.Conn, 0, n)
	var mu sync.Mutex
	next := atomic.Int64{}
	var wg sync.WaitGroup
	for range min(n, dialParallel) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				mc, err := r.open(ctx, fmt.Sprintf("c%d", from+i), idleBuf, 0)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, &err)
					continue
				}
				mu.Lock()
				out = append(out, mc.nc)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return out
}
