package packet

// TopicCache remembers the last topic names one connection published to,
// so that decoding a name seen before hands out the same string instead of
// a new one. Most publishers send to one topic or a handful; a fresh string
// per message is garbage that, until the heap is reused, lands on pages
// the process has not touched yet (a page fault each, docs/bench.md, round
// 7). It holds at most topicCacheSize names of at most maxCachedTopic bytes
// (2 KiB in all), replaced in turn: a client cycling through endless names
// only evicts, and pays what it paid without the cache, one string per
// message.
//
// The zero value is ready to use. A TopicCache is not safe for concurrent
// use: one belongs to one connection's reader.
type TopicCache struct {
	names [topicCacheSize]string
	next  int // the slot the next new name goes to
}

const (
	topicCacheSize = 8
	maxCachedTopic = 256
)

// lookup returns the cached name equal to b.
func (tc *TopicCache) lookup(b []byte) (string, bool) {
	for _, s := range tc.names {
		// The conversion in a comparison does not allocate.
		if len(s) == len(b) && s == string(b) {
			return s, true
		}
	}
	return "", false
}

// add remembers s, which is valid as a topic string, unless it is too long to keep.
func (tc *TopicCache) add(s string) {
	if len(s) > maxCachedTopic {
		return
	}
	tc.names[tc.next] = s
	tc.next = (tc.next + 1) % topicCacheSize
}
