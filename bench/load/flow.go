package load

import (
	"math"
	"sync"
	"sync/atomic"
)

// flow is a group of publishers and the subscribers that receive all of
// their messages: the whole of fan-in or fan-out, one pair of Pairs. It
// counts what went in and out, which is also how QoS 0 publishers pace
// themselves.
type flow struct {
	// fanout is how many deliveries one published message makes.
	fanout uint64
	// limit is the most messages the flow's publishers together may have
	// outstanding (published, not yet delivered); 0 means no pacing.
	limit int64
	// wakeRoom is how much room under limit makes waking the publishers
	// worthwhile: the smallest write a waiting publisher makes.
	wakeRoom int64

	published atomic.Uint64
	delivered atomic.Uint64
	// writtenOff are messages the publishers stopped waiting for (see
	// publisher.waitProgress): dropped by the broker, presumably.
	writtenOff atomic.Int64
	// slowest is the longest a stamped message took to arrive, in
	// nanoseconds: the drain waits in proportion to it.
	slowest  atomic.Int64
	progress gate

	mu sync.Mutex
	// writeOffAt is the delivery count (plus one) at the last write-off,
	// so the publishers that all notice one stall write off once.
	writeOffAt uint64
}

// writeOff counts what is outstanding as lost, once per stall: seen is
// the delivery count the caller saw not move. It reports whether it did.
func (f *flow) writeOff(seen uint64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.writeOffAt == seen+1 || f.delivered.Load() != seen {
		return false
	}
	f.writeOffAt = seen + 1
	f.writtenOff.Add(max(0, f.outstanding()))
	return true
}

// outstanding is how many messages are published but not yet delivered
// (to all subscribers, on average).
func (f *flow) outstanding() int64 {
	return int64(f.published.Load()) - int64(f.delivered.Load()/f.fanout) - f.writtenOff.Load()
}

// delivered records n deliveries and wakes the publishers when there is
// room for one of them to write: waking them for every read would cost
// more than the reads.
func (f *flow) deliver(n uint64) {
	f.delivered.Add(n)
	if f.progress.armed.Load() && f.limit-f.outstanding() >= f.wakeRoom {
		f.progress.open()
	}
}

// noteSlow raises slowest to d if d is longer. Subscribers call it once
// per read, with the slowest message of that read.
func (f *flow) noteSlow(d int64) {
	for {
		cur := f.slowest.Load()
		if d <= cur || f.slowest.CompareAndSwap(cur, d) {
			return
		}
	}
}

// gate wakes the goroutines waiting for a flow's subscribers to make
// progress. A waiter takes the channel, re-checks its condition and then
// waits; open closes the channel. armed spares open the lock when nobody
// waits, which is almost always.
type gate struct {
	mu    sync.Mutex
	ch    chan struct{}
	armed atomic.Bool
}

func (g *gate) wait() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ch == nil {
		g.ch = make(chan struct{})
		g.armed.Store(true)
	}
	return g.ch
}

func (g *gate) open() {
	if !g.armed.Load() {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ch != nil {
		close(g.ch)
		g.ch = nil
		g.armed.Store(false)
	}
}

// span is the measured interval in nanoseconds since the run's base time:
// subscribers record the latency of messages stamped inside it. Both ends
// start at MaxInt64, so nothing is recorded during the warm-up.
type span struct {
	lo, hi atomic.Int64
}

func newSpan() *span {
	s := &span{}
	s.lo.Store(math.MaxInt64)
	s.hi.Store(math.MaxInt64)
	return s
}
