package topic

import "sync"

// Tree is the subscription index: it maps topic filters to subscribers and
// finds the subscriptions matching a topic name. K identifies a subscriber
// (a session pointer or client id); V is that subscriber's data for one
// filter (QoS, options, subscription identifier, ...).
//
// A subscription is identified by (filter, group, key): one key may hold the
// same filter in several share groups and unshared, each with its own V.
//
// Locking: one sync.RWMutex guards the whole tree. Subscribe and Unsubscribe
// take the write lock; Match and Len take the read lock. The callback given
// to Match runs while the read lock is held, so it must not call back into
// the same Tree (a Subscribe from there deadlocks) and should be quick.
//
// The zero Tree is empty and ready to use; a Tree must not be copied after
// first use.
type Tree[K comparable, V any] struct {
	mu   sync.RWMutex
	root node[K, V] // holds no subscriptions; its children are the first levels
	n    int
}

// node is one filter level. Literal children are in kids (a small slice,
// a map when there are many); the '+' and '#' children have their own
// pointers so Match reaches them without a lookup.
type node[K comparable, V any] struct {
	kids kids[node[K, V]]
	plus *node[K, V]
	hash *node[K, V]
	// filter is the full filter this node stands for while it holds
	// subscriptions, a private copy (see own).
	filter string
	subs   []entry[K, V]
	// index finds a subscription in subs once there are more than indexMin
	// of them, so popular filters (many sessions on one topic) subscribe and
	// unsubscribe in constant time. Match only ever ranges over subs.
	index map[subID[K]]int
}

type entry[K comparable, V any] struct {
	group string
	key   K
	v     V
}

type subID[K comparable] struct {
	group string
	key   K
}

// indexMin is the subscriber count above which a node builds its index;
// below it a linear scan is as fast as hashing.
const indexMin = 8

// NewTree returns an empty Tree.
func NewTree[K comparable, V any]() *Tree[K, V] {
	return &Tree[K, V]{}
}

// Subscribe adds key's subscription to the plain filter (the caller has
// already stripped any "$share/{group}/" prefix) within share group ("" for
// a non-shared subscription), or replaces its V if it exists. It reports
// whether one was replaced. The filter is not validated; pass one that
// ValidFilter accepts.
func (t *Tree[K, V]) Subscribe(filter, group string, key K, v V) (replaced bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := &t.root
	for rest, more := filter, true; more; {
		var level string
		level, rest, more = cut(rest)
		n = n.child(level)
	}
	if n.filter == "" {
		n.filter = own(filter)
	}
	id := subID[K]{group, key}
	if i := n.find(id); i >= 0 {
		n.subs[i].v = v
		return true
	}
	n.add(entry[K, V]{group, key, v})
	t.n++
	return false
}

// Unsubscribe removes key's subscription to filter within group and reports
// whether it existed. Nodes left without subscriptions or children are
// removed, so subscribe/unsubscribe churn does not grow the tree.
func (t *Tree[K, V]) Unsubscribe(filter, group string, key K) (existed bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.root.remove(filter, subID[K]{group, key}) {
		t.n--
		return true
	}
	return false
}

// Match calls fn once for every subscription whose filter matches the topic
// name, passing the filter, its share group ("" if not shared), the key and
// its V. The order is unspecified. fn runs under the tree's read lock: it
// must not call back into t. Match does not allocate.
func (t *Tree[K, V]) Match(name string, fn func(filter, group string, key K, v V)) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	// Wildcards at the first level never match a '$' name [MQTT-4.7.2-1].
	t.root.match(name, isDollar(name), fn)
}

// Len returns the number of subscriptions.
func (t *Tree[K, V]) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.n
}

// match walks the next level of name from n. noWild skips n's '+' and '#'
// children, which is how the '$' rule applies at the first level.
func (n *node[K, V]) match(name string, noWild bool, fn func(string, string, K, V)) {
	level, rest, more := cut(name)
	if !noWild {
		if n.hash != nil {
			n.hash.emit(fn)
		}
		if n.plus != nil {
			n.plus.matched(rest, more, fn)
		}
	}
	if c := n.kids.get(level); c != nil {
		c.matched(rest, more, fn)
	}
}

// matched continues from n after n matched a level of the name.
func (n *node[K, V]) matched(rest string, more bool, fn func(string, string, K, V)) {
	if more {
		n.match(rest, false, fn)
		return
	}
	n.emit(fn)
	if n.hash != nil {
		n.hash.emit(fn) // "a/#" also matches "a" [MQTT-4.7.1-1]
	}
}

func (n *node[K, V]) emit(fn func(string, string, K, V)) {
	for i := range n.subs {
		e := &n.subs[i]
		fn(n.filter, e.group, e.key, e.v)
	}
}

// child returns n's child for level, creating it if needed.
func (n *node[K, V]) child(level string) *node[K, V] {
	if p := n.slot(level); p != nil {
		if *p == nil {
			*p = &node[K, V]{}
		}
		return *p
	}
	c := n.kids.get(level)
	if c == nil {
		c = &node[K, V]{}
		n.kids.add(level, c)
	}
	return c
}

// slot returns the pointer field for a wildcard level, nil for a literal.
func (n *node[K, V]) slot(level string) **node[K, V] {
	switch level {
	case "+":
		return &n.plus
	case "#":
		return &n.hash
	}
	return nil
}

func (n *node[K, V]) get(level string) *node[K, V] {
	if p := n.slot(level); p != nil {
		return *p
	}
	return n.kids.get(level)
}

func (n *node[K, V]) drop(level string) {
	if p := n.slot(level); p != nil {
		*p = nil
		return
	}
	n.kids.remove(level)
}

// remove deletes id from the node for filter below n, pruning emptied nodes
// on the way back up. Recursion depth is the filter's level count.
func (n *node[K, V]) remove(filter string, id subID[K]) bool {
	level, rest, more := cut(filter)
	c := n.get(level)
	if c == nil {
		return false
	}
	var ok bool
	if more {
		ok = c.remove(rest, id)
	} else if i := c.find(id); i >= 0 {
		c.removeAt(i)
		ok = true
	}
	if ok && c.empty() {
		n.drop(level)
	}
	return ok
}

func (n *node[K, V]) empty() bool {
	return len(n.subs) == 0 && n.kids.empty() && n.plus == nil && n.hash == nil
}

func (n *node[K, V]) find(id subID[K]) int {
	if n.index != nil {
		if i, ok := n.index[id]; ok {
			return i
		}
		return -1
	}
	for i := range n.subs {
		if n.subs[i].group == id.group && n.subs[i].key == id.key {
			return i
		}
	}
	return -1
}

func (n *node[K, V]) add(e entry[K, V]) {
	n.subs = append(n.subs, e)
	switch {
	case n.index != nil:
		n.index[subID[K]{e.group, e.key}] = len(n.subs) - 1
	case len(n.subs) > indexMin:
		n.index = make(map[subID[K]]int, len(n.subs))
		for i, s := range n.subs {
			n.index[subID[K]{s.group, s.key}] = i
		}
	}
}

// removeAt deletes subs[i] by moving the last entry into its place.
func (n *node[K, V]) removeAt(i int) {
	last := len(n.subs) - 1
	if n.index != nil {
		delete(n.index, subID[K]{n.subs[i].group, n.subs[i].key})
		if i != last {
			n.index[subID[K]{n.subs[last].group, n.subs[last].key}] = i
		}
	}
	n.subs[i] = n.subs[last]
	n.subs[last] = entry[K, V]{} // drop references for the GC
	n.subs = n.subs[:last]
	switch {
	case last == 0:
		n.subs, n.index, n.filter = nil, nil, ""
	case cap(n.subs) > 64 && last < cap(n.subs)/4:
		// Give back the memory of a filter whose crowd has left.
		n.subs = append([]entry[K, V](nil), n.subs...)
	}
	if n.index != nil && last <= indexMin/2 {
		n.index = nil
	}
}
