package topic

import "sync"

// Retained stores one value per topic name (the broker's retained messages)
// in a trie of levels, so MatchFilter visits only the branches a filter can
// reach instead of scanning every name.
//
// Locking: one sync.RWMutex guards the store. Set and Delete take the write
// lock; Get, Len and MatchFilter take the read lock. The callback given to
// MatchFilter runs while the read lock is held, so it must not call back into
// the same Retained.
//
// The zero Retained is empty and ready to use; it must not be copied after
// first use.
type Retained[V any] struct {
	mu   sync.RWMutex
	root rnode[V] // holds no value; its children are the first levels
	n    int
}

// rnode is one level of a name. The full name is kept only where a value
// is set; it is the caller's string (the broker's Message.Topic), so it
// costs the node its header and nothing else.
type rnode[V any] struct {
	kids kids[rnode[V]]
	name string // the full topic name, when set
	v    V
	set  bool
}

// Set stores v under the topic name, replacing any previous value. The name
// is not validated; pass one that ValidName accepts.
func (r *Retained[V]) Set(name string, v V) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := &r.root
	for rest, more := name, true; more; {
		var level string
		level, rest, more = cut(rest)
		c := n.kids.get(level)
		if c == nil {
			c = &rnode[V]{}
			n.kids.add(level, c)
		}
		n = c
	}
	if !n.set {
		r.n++
	}
	n.name, n.set, n.v = name, true, v
}

// Delete removes the value stored under name and reports whether there was
// one. Emptied branches are pruned.
func (r *Retained[V]) Delete(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.root.remove(name) {
		r.n--
		return true
	}
	return false
}

// Get returns the value stored under name, or the zero V and false.
func (r *Retained[V]) Get(name string) (V, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	n := &r.root
	for rest, more := name, true; more && n != nil; {
		var level string
		level, rest, more = cut(rest)
		n = n.kids.get(level)
	}
	if n == nil || !n.set {
		var zero V
		return zero, false
	}
	return n.v, true
}

// Len returns the number of stored names.
func (r *Retained[V]) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.n
}

// MatchFilter calls fn for every stored name that the plain (non-shared)
// filter matches, with the same rules as Match, including the '$' rule
// [MQTT-4.7.2-1]. The order is unspecified. fn runs under the read lock: it
// must not call back into r.
func (r *Retained[V]) MatchFilter(filter string, fn func(name string, v V)) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	r.root.match(filter, true, fn)
}

// match applies the next filter level below n; root is true at the first
// level, where wildcards skip '$' names.
func (n *rnode[V]) match(filter string, root bool, fn func(string, V)) {
	level, rest, more := cut(filter)
	switch level {
	case "#":
		if !root && n.set {
			fn(n.name, n.v) // "a/#" also matches "a" [MQTT-4.7.1-1]
		}
		// The slice and map loops are written out rather than behind an
		// iterator: this is the fan-out of every '#' SUBSCRIBE.
		for _, k := range n.kids.list {
			if !(root && isDollar(k.level)) {
				k.n.walk(fn)
			}
		}
		for k, c := range n.kids.big {
			if !(root && isDollar(k)) {
				c.walk(fn)
			}
		}
	case "+":
		for _, k := range n.kids.list {
			if !(root && isDollar(k.level)) {
				k.n.matched(rest, more, fn)
			}
		}
		for k, c := range n.kids.big {
			if !(root && isDollar(k)) {
				c.matched(rest, more, fn)
			}
		}
	default:
		if c := n.kids.get(level); c != nil {
			c.matched(rest, more, fn)
		}
	}
}

func (n *rnode[V]) matched(rest string, more bool, fn func(string, V)) {
	if more {
		n.match(rest, false, fn)
	} else if n.set {
		fn(n.name, n.v)
	}
}

// walk visits n and everything below it.
func (n *rnode[V]) walk(fn func(string, V)) {
	if n.set {
		fn(n.name, n.v)
	}
	for _, k := range n.kids.list {
		k.n.walk(fn)
	}
	for _, c := range n.kids.big {
		c.walk(fn)
	}
}

// remove clears name below n, pruning emptied nodes on the way back up.
func (n *rnode[V]) remove(name string) bool {
	level, rest, more := cut(name)
	c := n.kids.get(level)
	if c == nil {
		return false
	}
	var ok bool
	if more {
		ok = c.remove(rest)
	} else if c.set {
		var zero V
		c.name, c.set, c.v = "", false, zero
		ok = true
	}
	if ok && !c.set && c.kids.empty() {
		n.kids.remove(level)
	}
	return ok
}
