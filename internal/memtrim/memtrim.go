// Package memtrim returns free heap memory to the operating system when a
// lot of it sits unused, so a broker's resident memory follows its live
// data after a burst (a connection storm, a backlog drained) instead of
// staying at the burst's high-water mark.
//
// The Go runtime already gives memory back, but only down to about its
// next collection goal, which is twice the live heap by default: a broker
// holding 20,000 idle connections keeps their garbage-collector headroom
// resident forever. Operators size containers by RSS, so Roost trims when
// the free part is both large and a large share of the heap. A trim is one
// forced collection plus madvise calls: a few milliseconds for a heap of
// tens of megabytes, at most once per interval, and about 1% of the time
// at most (a trim that took 20 ms waits 2 s for the next).
//
// Why a forced trim every second rather than the runtime's knobs
// (bench/RESULTS.md, "Idle memory and the trim": 19,900 idle connections,
// KiB of RSS per connection 2 s after the last one connected and 12 s
// after, two runs each, load average 5 to 10): the runtime alone 2.38 and
// 2.39; GOGC=50 2.05-2.09 at both; this trim every 10 s 2.35-2.40 and
// 1.88-1.91 (fine after the trim, not before it); every second 1.95-1.97
// at both. GOMEMLIMIT=40MiB did best (1.77) but a fixed limit is a guess
// about the live heap: set below it, the collector runs continuously.
package memtrim

import (
	"context"
	"log/slog"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Policy says when to trim. The zero value is not useful; see Default.
type Policy struct {
	// Interval between looks at the heap.
	Interval time.Duration
	// MinFree is the least reclaimable heap (free, or garbage) worth a
	// trim.
	MinFree uint64
	// MinShare is the least reclaimable heap relative to the live heap.
	MinShare float64
	// MaxTime is the largest share of time trims may take: after a trim
	// that cost d, the next look waits d/MaxTime, but at most 10
	// intervals. d is the process's CPU time during the trim where it can
	// be read (Unix), else the trim's wall-clock time; wall time would
	// also count waiting for a CPU (a trim on a starved core took 300 ms
	// of wall time and stopped trimming for 30 s). A busy broker makes
	// garbage fast enough to be due at every look; this keeps what the
	// trims cost it bounded. Zero means no bound.
	MaxTime float64
}

// Default trims when at least 1 MiB, and a quarter of the live heap,
// is free or garbage, looking every second, trimming at most 1% of the
// time.
func Default() Policy {
	return Policy{Interval: time.Second, MinFree: 1 << 20, MinShare: 0.25, MaxTime: 0.01}
}

// pause is how long to wait after a trim that cost cost.
func (p Policy) pause(cost time.Duration) time.Duration {
	if p.MaxTime <= 0 {
		return p.Interval
	}
	return min(max(p.Interval, time.Duration(float64(cost)/p.MaxTime)), 10*p.Interval)
}

// Heap is the part of runtime/metrics memtrim reads.
type Heap struct {
	Free    uint64 // free heap not yet returned to the OS
	Objects uint64 // live objects and garbage not yet collected
	Live    uint64 // live objects as of the last collection
}

// Reclaimable is what a collection and a trim would return: the free heap
// and the garbage.
func (h Heap) Reclaimable() uint64 {
	return h.Free + h.Objects - min(h.Live, h.Objects)
}

// ReadHeap reads the current heap figures.
func ReadHeap() Heap {
	s := []metrics.Sample{
		{Name: "/memory/classes/heap/free:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/gc/heap/live:bytes"},
	}
	metrics.Read(s)
	var h Heap
	if s[0].Value.Kind() == metrics.KindUint64 {
		h.Free = s[0].Value.Uint64()
	}
	if s[1].Value.Kind() == metrics.KindUint64 {
		h.Objects = s[1].Value.Uint64()
	}
	if s[2].Value.Kind() == metrics.KindUint64 {
		h.Live = s[2].Value.Uint64()
	}
	return h
}

// Due reports whether h is worth a trim under p.
func (p Policy) Due(h Heap) bool {
	r := h.Reclaimable()
	return r >= p.MinFree && float64(r) >= p.MinShare*float64(h.Live)
}

// Run trims under p until ctx ends.
func Run(ctx context.Context, p Policy, log *slog.Logger) {
	t := time.NewTimer(p.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		wait := p.Interval
		if h := ReadHeap(); p.Due(h) {
			start := time.Now()
			cpu0, cpuOK := processCPU()
			debug.FreeOSMemory()
			took := time.Since(start)
			cost := took
			if cpu1, ok := processCPU(); cpuOK && ok {
				cost = cpu1 - cpu0
			}
			wait = p.pause(cost)
			log.Debug("returned free heap to the OS", "reclaimable_bytes", h.Reclaimable(), "live_bytes", h.Live, "took", took, "cpu", cost)
		}
		t.Reset(wait)
	}
}
