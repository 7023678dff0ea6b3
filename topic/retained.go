package topic

import (
	"slices"
	"sync"
)

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

// MatchFilterSorted is MatchFilter in ascending byte order of the names,
// stopping as soon as fn returns false: a listing that wants the first n
// matches visits little more than those n, however many there are. It
// costs sorting the children of every node it visits. fn runs under the
// read lock: it must not call back into r.
func (r *Retained[V]) MatchFilterSorted(filter string, fn func(name string, v V) bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	r.root.below(filter, true, fn)
}

// place is one position in the sorted order of the names at and under a child
// of a node: the child's own name (sub false), whose key is its level, or
// the names below it (sub true), whose key is its level followed by '/'.
// Sorting places by key sorts the names themselves, because levels hold
// no '/'.
type place[V any] struct {
	level string
	n     *rnode[V]
	sub   bool
}

// keyByte is byte i of e's key, and false past its end.
func (e *place[V]) keyByte(i int) (byte, bool) {
	switch {
	case i < len(e.level):
		return e.level[i], true
	case i == len(e.level) && e.sub:
		return '/', true
	}
	return 0, false
}

func comparePlaces[V any](a, b place[V]) int {
	for i := 0; ; i++ {
		x, okx := a.keyByte(i)
		y, oky := b.keyByte(i)
		switch {
		case !okx && !oky:
			return 0
		case !okx:
			return -1
		case !oky:
			return 1
		case x != y:
			return int(x) - int(y)
		}
	}
}

// sorted returns n's children as places in name order; at the root,
// '$' levels are left out (wildcards do not match them [MQTT-4.7.2-1]).
func (n *rnode[V]) sorted(root bool) []place[V] {
	out := make([]place[V], 0, 2*n.kids.len())
	add := func(level string, c *rnode[V]) {
		if !(root && isDollar(level)) {
			out = append(out, place[V]{level, c, false}, place[V]{level, c, true})
		}
	}
	for _, k := range n.kids.list {
		add(k.level, k.n)
	}
	for level, c := range n.kids.big {
		add(level, c)
	}
	slices.SortFunc(out, comparePlaces[V])
	return out
}

// below calls fn, in name order, for the names under n (not n's own) that
// filter matches, filter applying from the level below n; it returns false
// once fn has.
func (n *rnode[V]) below(filter string, root bool, fn func(string, V) bool) bool {
	level, rest, more := cut(filter)
	// A child's own name matches when the filter ends at it, or when only
	// "#" is left ("a/#" matches "a" [MQTT-4.7.1-1]).
	self := !more || rest == "#"
	switch level {
	case "#":
		return n.walkSorted(root, fn)
	case "+":
		for _, e := range n.sorted(root) {
			if !e.sub && self && e.n.set && !fn(e.n.name, e.n.v) {
				return false
			}
			if e.sub && more && !e.n.below(rest, false, fn) {
				return false
			}
		}
		return true
	}
	c := n.kids.get(level)
	if c == nil {
		return true
	}
	if self && c.set && !fn(c.name, c.v) {
		return false
	}
	return !more || c.below(rest, false, fn)
}

// walkSorted calls fn for every name under n, in order; it returns false
// once fn has.
func (n *rnode[V]) walkSorted(root bool, fn func(string, V) bool) bool {
	for _, e := range n.sorted(root) {
		if !e.sub && e.n.set && !fn(e.n.name, e.n.v) {
			return false
		}
		if e.sub && !e.n.walkSorted(false, fn) {
			return false
		}
	}
	return true
}
