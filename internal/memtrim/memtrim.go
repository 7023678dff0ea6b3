// Package memtrim returns free heap memory to the operating system when a
// lot of it sits unused, so a broker's resident memory follows its live
// data after a burst (a connection storm, a backlog drained) instead of
// staying at the burst's high-water mark.
//
// The Go runtime already gives memory back, but only down to about its
// next collection goal, which is twice the live heap by default: a broker
// holding 20,000 idle connections keeps their garbage-collector headroom
// resident forever. Operators size containers by RSS, so Roost trims when
// the free part is both large and a noticeable share of the heap. A trim is one
// forced collection plus madvise calls: a few milliseconds of CPU for a
// heap of tens of megabytes. Trims draw on a CPU budget that fills at 1%
// of the time up to a burst of 250 ms: a broker that was quiet can trim at
// every look through a connection storm and right after it, while one
// that makes garbage all the time trims for at most 1% of its CPU.
//
// Why a forced trim rather than the runtime's knobs (bench/RESULTS.md,
// "Idle memory and the trim", and docs/bench.md: 19,900 idle connections,
// KiB of RSS per connection 2 s after the last one connected and 12 s
// after): the runtime alone 2.38 and 2.39; GOGC=50 2.05-2.09 at both (and
// 1.87-2.23 with the trim, no better); a trim every 10 s 2.35-2.40 and
// 1.88-1.91 (fine after the trim, not before it); every second with a
// plain 1% bound 1.92-2.45 and 1.91-1.96, because a trim during the storm
// that cost 20-30 ms held the next one back for 2-3 s, past the 2 s mark;
// with the budget, see docs/bench.md. GOMEMLIMIT=40MiB did best (1.77) but
// a fixed limit is a guess about the live heap: set below it, the
// collector runs continuously.
//
// A trim is also a cost paid later: every page it returns is faulted back
// in, one page fault at a time, when the broker allocates there again. A
// broker under steady traffic cycles its whole heap headroom between
// collections, so trimming it only turns that headroom into page faults on
// the message path (docs/bench.md, round 7: at 1,000 messages a second a
// trim every 5 s made 50 faults a second, each adding 70 to 110 µs to the
// message it hit, on this project's virtual machines). So while the
// broker allocates fast enough to take what a trim would return back within
// a minute (Policy.Horizon), it trims only a reclaimable heap beyond the
// runtime's own cycle (Policy.BusyMinFree): a connection storm's garbage
// still goes at once, the headroom a steady flow of messages reuses stays.
// Below that, a busy broker's garbage is collected without returning
// anything (Policy.Collect), at the pace trims had: the heap then cycles
// through resident pages instead of growing into fresh ones up to the
// runtime's 4 MiB minimum before its first collection.
package memtrim

import (
	"context"
	"log/slog"
	"runtime"
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
	// MaxTime is the largest share of CPU time trims may take in the long
	// run: the budget trims draw on fills at this rate. A trim's cost is
	// the CPU time it used (the lower of the runtime's estimate of its
	// collection CPU and the process's CPU time during it: charge), not
	// its wall time, which would also count waiting for a starved core
	// and the other goroutines' work. Zero means no bound.
	MaxTime float64
	// Burst is the most the budget holds: what trims may spend at once
	// after a quiet spell (a storm of connections, say) before MaxTime
	// paces them. While the budget is overdrawn the next look waits until
	// it is refilled, at most 10 intervals.
	Burst time.Duration
	// Horizon and BusyMinFree keep a trim from returning memory that is
	// about to be faulted back in: while the broker, at its allocation
	// rate since the last look, would allocate as much as the reclaimable
	// heap within Horizon (it is busy), a trim needs BusyMinFree
	// reclaimable, not MinFree. Zero Horizon: no such condition.
	Horizon     time.Duration
	BusyMinFree uint64
}

// Default looks every half second and trims when at least 1 MiB, and a
// tenth of the live heap, is free or garbage (4 MiB, the Go runtime's
// minimum heap, while the broker would allocate as much within a minute),
// spending at most 1% of the time on trims in the long run and 250 ms at
// once. (A quarter left up to
// 0.33 KiB per idle connection untrimmed: 19,900 of them measured 1.84 to
// 2.05 KiB each 12 s after the last connected, against 1.85 to 1.90 with
// a tenth; the budget keeps the more frequent trims' cost bounded.)
func Default() Policy {
	return Policy{Interval: 500 * time.Millisecond, MinFree: 1 << 20, MinShare: 0.1, MaxTime: 0.01, Burst: 250 * time.Millisecond,
		Horizon: time.Minute, BusyMinFree: 4 << 20}
}

// refill is the budget left after elapsed more time.
func (p Policy) refill(left, elapsed time.Duration) time.Duration {
	return min(p.Burst, left+time.Duration(float64(elapsed)*p.MaxTime))
}

// pause is how long to wait for the next look with left in the budget.
func (p Policy) pause(left time.Duration) time.Duration {
	if p.MaxTime <= 0 || left >= 0 {
		return p.Interval
	}
	return min(max(p.Interval, time.Duration(float64(-left)/p.MaxTime)), 10*p.Interval)
}

// Heap is the part of runtime/metrics memtrim reads.
type Heap struct {
	Free      uint64 // free heap not yet returned to the OS
	Objects   uint64 // live objects and garbage not yet collected
	Live      uint64 // live objects as of the last collection
	Allocated uint64 // bytes allocated since the process started
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
		{Name: "/gc/heap/allocs:bytes"},
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
	if s[3].Value.Kind() == metrics.KindUint64 {
		h.Allocated = s[3].Value.Uint64()
	}
	return h
}

// Due reports whether h is worth a trim under p, prev being the heap read
// elapsed earlier (the last look).
func (p Policy) Due(h, prev Heap, elapsed time.Duration) bool {
	if !p.worth(h) {
		return false
	}
	return h.Reclaimable() >= p.BusyMinFree || !p.busy(h, prev, elapsed)
}

// worth reports whether h's reclaimable heap is enough to act on at all:
// MinFree, and MinShare of the live heap.
func (p Policy) worth(h Heap) bool {
	r := h.Reclaimable()
	return r >= p.MinFree && float64(r) >= p.MinShare*float64(h.Live)
}

// busy reports whether the broker, at its allocation rate since prev,
// would allocate h's reclaimable heap again within p.Horizon.
func (p Policy) busy(h, prev Heap, elapsed time.Duration) bool {
	if p.Horizon <= 0 || elapsed <= 0 || h.Allocated < prev.Allocated {
		return false
	}
	// Allocated over elapsed is the rate; compared without dividing.
	return float64(h.Allocated-prev.Allocated)*p.Horizon.Seconds() >= float64(h.Reclaimable())*elapsed.Seconds()
}

// Collect reports whether a heap that is not Due because the broker is
// busy is worth a collection that returns nothing: MinFree of garbage.
// Collected, it is free heap the broker allocates from again, resident,
// where it would otherwise touch fresh pages (a page fault each) until the
// runtime's first collection at its 4 MiB minimum heap.
func (p Policy) Collect(h, prev Heap, elapsed time.Duration) bool {
	return p.worth(h) && h.Reclaimable() < p.BusyMinFree &&
		h.Objects >= h.Live+p.MinFree && p.busy(h, prev, elapsed)
}

// Run trims under p until ctx ends.
func Run(ctx context.Context, p Policy, log *slog.Logger) {
	t := time.NewTimer(p.Interval)
	defer t.Stop()
	left, last := p.Burst, time.Now()
	prev := ReadHeap()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		elapsed := now.Sub(last)
		left, last = p.refill(left, elapsed), now
		h := ReadHeap()
		release := p.Due(h, prev, elapsed)
		if (release || p.Collect(h, prev, elapsed)) && (p.MaxTime <= 0 || left >= 0) {
			cost, took := trim(release)
			left -= cost
			log.Debug("collected", "returned", release, "reclaimable_bytes", h.Reclaimable(), "live_bytes", h.Live,
				"took", took, "cpu", cost, "budget_left", left)
			h = ReadHeap() // the trim's own allocations are not the broker's rate
		}
		prev = h
		t.Reset(p.pause(left))
	}
}

// cpuMetrics are the runtime's estimates of the CPU time spent collecting
// garbage and returning memory to the OS.
var cpuMetrics = []string{"/cpu/classes/gc/total:cpu-seconds", "/cpu/classes/scavenge/total:cpu-seconds"}

// trimCPU is the CPU time the runtime has spent collecting and returning
// memory, and whether it could be read.
func trimCPU() (time.Duration, bool) {
	s := make([]metrics.Sample, len(cpuMetrics))
	for i, name := range cpuMetrics {
		s[i].Name = name
	}
	metrics.Read(s)
	var sum float64
	for _, x := range s {
		if x.Value.Kind() != metrics.KindFloat64 {
			return 0, false
		}
		sum += x.Value.Float64()
	}
	return time.Duration(sum * float64(time.Second)), true
}

// trim collects and, if release, returns free memory to the OS, and says
// what that cost in CPU time (see charge) and in wall time.
func trim(release bool) (cost, took time.Duration) {
	start := time.Now()
	gc0, gcOK0 := trimCPU()
	proc0, procOK0 := processCPU()
	if release {
		debug.FreeOSMemory()
	} else {
		runtime.GC()
	}
	took = time.Since(start)
	gc1, gcOK1 := trimCPU()
	proc1, procOK1 := processCPU()
	return charge(gc1-gc0, gcOK0 && gcOK1, proc1-proc0, procOK0 && procOK1, took), took
}

// charge is what a trim is charged: the CPU it used, of which there are two
// readings, each too high in its own way, so the lower one is the better.
// The runtime's estimate of its collection and scavenging CPU (gc, when
// gcOK) counts a collector's time on its P, including time the OS kept its
// thread off the core: on a starved core (a load average of 40 on two
// cores measured a 20-30 ms trim as far more) it ran the budget dry during
// a connection storm, and the next trim waited past the moment an operator
// looks. The process's CPU time (proc, when procOK) is what the kernel
// counted on a core, but for every goroutine that ran during the trim. A
// trim cost what neither reading exceeds. With neither, its wall time.
func charge(gc time.Duration, gcOK bool, proc time.Duration, procOK bool, took time.Duration) time.Duration {
	switch {
	case gcOK && procOK:
		return max(0, min(gc, proc))
	case gcOK:
		return max(0, gc)
	case procOK:
		return max(0, proc)
	}
	return took
}
