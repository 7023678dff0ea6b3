package topic

import (
	"fmt"
	"runtime"
	"testing"
)

// memSites x memDevices topics "site/{s}/dev/{d}/temp": 1M, the shape of the
// start-up measurement (every device node has a single child).
const memSites, memDevices = 1000, 1000

// memNames builds the names once, outside the measurement, because in the
// broker the retained Message (or the SUBSCRIBE) already holds the string;
// the tries' own segments are substrings of it.
func memNames() []string {
	names := make([]string, 0, memSites*memDevices)
	for s := range memSites {
		for d := range memDevices {
			names = append(names, fmt.Sprintf("site/%d/dev/%d/temp", s, d))
		}
	}
	return names
}

// heapAfterGC returns the live heap in bytes.
func heapAfterGC() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// benchMemory builds a fresh index per iteration with build and reports the
// live heap it holds per topic (B/topic) and the time per inserted topic.
func benchMemory(b *testing.B, build func(names []string) any) {
	names := memNames()
	var perTopic float64
	for b.Loop() {
		b.StopTimer()
		before := heapAfterGC()
		b.StartTimer()
		idx := build(names)
		b.StopTimer()
		after := heapAfterGC()
		runtime.KeepAlive(idx)
		perTopic = float64(int64(after)-int64(before)) / float64(len(names))
		b.StartTimer()
	}
	b.ReportMetric(perTopic, "B/topic")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(names)), "ns/insert")
}

// BenchmarkRetainedMemory: live heap per retained topic after inserting 1M
// names, as after a broker start-up with 1M retained messages.
func BenchmarkRetainedMemory(b *testing.B) {
	benchMemory(b, func(names []string) any {
		r := new(Retained[*int])
		v := new(int)
		for _, n := range names {
			r.Set(n, v)
		}
		return r
	})
}

// BenchmarkTreeMemory: live heap per subscription after 1M sessions each
// subscribe to their own literal filter.
func BenchmarkTreeMemory(b *testing.B) {
	benchMemory(b, func(names []string) any {
		tr := NewTree[int, byte]()
		for i, n := range names {
			tr.Subscribe(n, "", i, 1)
		}
		return tr
	})
}
