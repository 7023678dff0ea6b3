package memtrim

import (
	"context"
	"log/slog"
	"runtime"
	"testing"
	"time"
)

func TestDue(t *testing.T) {
	p := Policy{MinFree: 4 << 20, MinShare: 0.25}
	for _, tc := range []struct {
		h    Heap
		want bool
	}{
		{Heap{Free: 1 << 20, Objects: 1 << 20, Live: 1 << 20}, false},   // too little to matter
		{Heap{Free: 8 << 20, Objects: 64 << 20, Live: 64 << 20}, false}, // a small share of a big heap
		{Heap{Free: 8 << 20, Objects: 16 << 20, Live: 16 << 20}, true},  // free heap
		{Heap{Free: 1 << 20, Objects: 40 << 20, Live: 20 << 20}, true},  // garbage
		{Heap{Free: 4 << 20, Objects: 0}, true},
	} {
		if got := p.Due(tc.h, Heap{}, 0); got != tc.want {
			t.Errorf("Due(%+v) = %v, want %v", tc.h, got, tc.want)
		}
	}
}

// A heap the broker is allocating through is not trimmed: what a trim
// returned would be faulted back in on the message path within the
// horizon. A quiet broker's is, and a busy one's beyond BusyMinFree.
func TestDueWaitsForQuiet(t *testing.T) {
	p := Policy{MinFree: 1 << 20, Horizon: time.Minute, BusyMinFree: 4 << 20}
	h := Heap{Free: 1 << 20, Objects: 3 << 20, Live: 1 << 20, Allocated: 100 << 20} // 3 MiB reclaimable
	for _, tc := range []struct {
		name      string
		allocated uint64 // since the last look, a second ago
		want      bool
	}{
		{"1,000 msgs/s of 220 B: back in 14 s", 220 << 10, false},
		{"100 KiB/s: back in 31 s", 100 << 10, false},
		{"40 KiB/s: back in 77 s", 40 << 10, true},
		{"quiet", 0, true},
	} {
		prev := h
		prev.Allocated -= tc.allocated
		if got := p.Due(h, prev, time.Second); got != tc.want {
			t.Errorf("%s: Due = %v, want %v", tc.name, got, tc.want)
		}
	}
	storm := Heap{Free: 8 << 20, Objects: 40 << 20, Live: 24 << 20, Allocated: 900 << 20}
	if !p.Due(storm, Heap{Allocated: 800 << 20}, time.Second) {
		t.Errorf("a connection storm's 24 MiB of garbage, 100 MiB/s allocated: not due")
	}
	if p.Collect(storm, Heap{Allocated: 800 << 20}, time.Second) {
		t.Errorf("a storm's heap is trimmed, not only collected")
	}
	if !(Policy{MinFree: 1 << 20}).Due(h, Heap{Allocated: 0}, time.Second) {
		t.Errorf("no horizon: a busy heap is due")
	}
	if !p.Due(h, h, 0) {
		t.Errorf("first look (no elapsed time): due")
	}
}

func TestBudget(t *testing.T) {
	p := Policy{Interval: time.Second, MaxTime: 0.01, Burst: 250 * time.Millisecond}
	for _, tc := range []struct{ left, elapsed, want time.Duration }{
		{0, time.Second, 10 * time.Millisecond},                       // fills at 1% of the time
		{200 * time.Millisecond, time.Minute, 250 * time.Millisecond}, // up to the burst
		{-30 * time.Millisecond, time.Second, -20 * time.Millisecond}, // an overdraft is paid back first
		{250 * time.Millisecond, 0, 250 * time.Millisecond},
	} {
		if got := p.refill(tc.left, tc.elapsed); got != tc.want {
			t.Errorf("refill(%v, %v) = %v, want %v", tc.left, tc.elapsed, got, tc.want)
		}
	}
	for _, tc := range []struct{ left, want time.Duration }{
		{100 * time.Millisecond, time.Second}, // budget left: the interval
		{0, time.Second},
		{-5 * time.Millisecond, time.Second},      // refilled within the interval
		{-20 * time.Millisecond, 2 * time.Second}, // until the overdraft is refilled
		{-time.Second, 10 * time.Second},          // at most 10 intervals
	} {
		if got := p.pause(tc.left); got != tc.want {
			t.Errorf("pause(%v) = %v, want %v", tc.left, got, tc.want)
		}
	}
	if got := (Policy{Interval: time.Second}).pause(-time.Hour); got != time.Second {
		t.Errorf("no bound: pause = %v, want the interval", got)
	}
}

var sink [][]byte

// After garbage is made and dropped, a run trims and the free heap shrinks.
func TestRunReturnsFreeHeap(t *testing.T) {
	for range 64 {
		sink = append(sink, make([]byte, 256<<10))
	}
	sink = nil
	runtime.GC() // the garbage is now free heap, still resident
	before := ReadHeap()
	if before.Reclaimable() < 8<<20 {
		t.Skipf("only %d bytes reclaimable; the runtime already returned them", before.Reclaimable())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		Run(ctx, Policy{Interval: 10 * time.Millisecond, MinFree: 1 << 20, MinShare: 0}, slog.New(slog.DiscardHandler))
		close(done)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for ReadHeap().Free > before.Free/2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if after := ReadHeap(); after.Free > before.Free/2 {
		t.Fatalf("free heap %d -> %d: not returned", before.Free, after.Free)
	}
}

// A trim's cost is the CPU time it used: above zero for a trim that
// collected a heap, and never more than the whole process used meanwhile.
func TestTrimCost(t *testing.T) {
	if _, ok := trimCPU(); !ok {
		t.Fatalf("runtime/metrics has no %v", cpuMetrics)
	}
	for range 64 {
		sink = append(sink, make([]byte, 64<<10))
	}
	sink = sink[:32] // half garbage, half live
	proc0, procOK := processCPU()
	cost, took := trim(true)
	proc1, _ := processCPU()
	sink = nil
	if cost <= 0 || took <= 0 {
		t.Fatalf("trim cost %v of CPU in %v", cost, took)
	}
	if procOK && cost > proc1-proc0 {
		t.Errorf("trim charged %v, more than the process's %v of CPU during it", cost, proc1-proc0)
	}
}

// A trim is charged the lower of the two CPU readings (each too high in its
// own way), whichever it has; its wall time when it has neither.
func TestCharge(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		name        string
		gc          time.Duration
		gcOK        bool
		proc        time.Duration
		procOK      bool
		took, wants time.Duration
	}{
		{"starved core: the runtime counts time off the core", 30 * ms, true, 4 * ms, true, 40 * ms, 4 * ms},
		{"busy process: other goroutines ran meanwhile", 3 * ms, true, 9 * ms, true, 10 * ms, 3 * ms},
		{"no process CPU (Windows)", 3 * ms, true, 0, false, 10 * ms, 3 * ms},
		{"no runtime estimate", 0, false, 5 * ms, true, 10 * ms, 5 * ms},
		{"neither", 0, false, 0, false, 10 * ms, 10 * ms},
		{"clock granularity", 2 * ms, true, -ms, true, 10 * ms, 0},
	} {
		if got := charge(tc.gc, tc.gcOK, tc.proc, tc.procOK, tc.took); got != tc.wants {
			t.Errorf("%s: charge = %v, want %v", tc.name, got, tc.wants)
		}
	}
}

// A busy broker's small heap is collected, without returning memory, once
// it holds MinFree of garbage: the broker then allocates from resident free
// heap instead of touching fresh pages. Not again until there is that much
// garbage again, and not when the heap is due a trim.
func TestCollectBusySmallHeap(t *testing.T) {
	p := Policy{MinFree: 1 << 20, MinShare: 0.1, Horizon: time.Minute, BusyMinFree: 4 << 20}
	busy := func(h Heap) Heap { h.Allocated = 100 << 20; return h }
	prev := Heap{Allocated: 100<<20 - 220<<10} // 220 KiB a second
	for _, tc := range []struct {
		name string
		h    Heap
		prev Heap
		want bool
	}{
		{"1 MiB of garbage", busy(Heap{Free: 0, Objects: 2 << 20, Live: 1 << 20}), prev, true},
		{"just collected: free heap, no garbage", busy(Heap{Free: 1 << 20, Objects: 1 << 20, Live: 1 << 20}), prev, false},
		{"little garbage", busy(Heap{Free: 1 << 20, Objects: 1<<20 + 512<<10, Live: 1 << 20}), prev, false},
		{"quiet: trimmed instead", busy(Heap{Objects: 3 << 20, Live: 1 << 20}), busy(Heap{}), false},
		{"4 MiB reclaimable: trimmed instead", busy(Heap{Free: 1 << 20, Objects: 4 << 20, Live: 1 << 20}), prev, false},
	} {
		if got := p.Collect(tc.h, tc.prev, time.Second); got != tc.want {
			t.Errorf("%s: Collect = %v, want %v", tc.name, got, tc.want)
		}
		if tc.want && p.Due(tc.h, tc.prev, time.Second) {
			t.Errorf("%s: both Collect and Due", tc.name)
		}
	}
}
