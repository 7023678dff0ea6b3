package load

import "math/bits"

// histogram counts latencies in nanoseconds in log-linear buckets: values
// below 64 ns exactly, above that 64 buckets per power of two, so a bucket
// is at most 1/64 (1.6%) of its value wide. Recording is an index
// computation and an increment; each subscriber owns one and they are
// merged when the run ends, so there is no sharing on the hot path.
type histogram struct {
	counts []uint64
	n      uint64
	sum    uint64
	max    uint64
}

const (
	subBits    = 6
	subBuckets = 1 << subBits
	numBuckets = (64 - subBits + 1) * subBuckets
)

func newHistogram() *histogram { return &histogram{counts: make([]uint64, numBuckets)} }

func bucketOf(v uint64) int {
	if v < subBuckets {
		return int(v)
	}
	e := bits.Len64(v) - subBits - 1 // v>>e is in [64, 128)
	return (e+1)*subBuckets + int(v>>e) - subBuckets
}

// bucketMid is the middle of bucket i's range of values.
func bucketMid(i int) uint64 {
	if i < subBuckets {
		return uint64(i)
	}
	e := i/subBuckets - 1
	m := uint64(i%subBuckets + subBuckets)
	lo, hi := m<<e, (m+1)<<e-1
	return lo + (hi-lo)/2
}

func (h *histogram) record(ns int64) {
	if ns < 0 {
		ns = 0 // cannot happen on one monotonic clock; be safe anyway
	}
	v := uint64(ns)
	h.counts[bucketOf(v)]++
	h.n++
	h.sum += v
	if v > h.max {
		h.max = v
	}
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.max = max(h.max, o.max)
}

// quantile returns the value at quantile q (0..1) in nanoseconds.
func (h *histogram) quantile(q float64) uint64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.5)
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(bucketMid(i), h.max)
		}
	}
	return h.max
}

// stats summarises h in microseconds; nil when nothing was recorded.
func (h *histogram) stats() *LatencyStats {
	if h.n == 0 {
		return nil
	}
	us := func(ns uint64) float64 { return float64(ns) / 1e3 }
	return &LatencyStats{
		Count: h.n,
		Mean:  float64(h.sum) / float64(h.n) / 1e3,
		P50:   us(h.quantile(0.50)),
		P90:   us(h.quantile(0.90)),
		P99:   us(h.quantile(0.99)),
		P999:  us(h.quantile(0.999)),
		Max:   us(h.max),
	}
}
