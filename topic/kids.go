package topic

import "strings"

// listMax is the most literal children a node keeps in its slice; one more
// moves them into a map. Most nodes of a topic trie have one child (the
// "dev/42" in "site/1/dev/42/temp" has only "temp"), and a Go map costs
// about 200 bytes even for one entry where a slice element costs 24. An
// unsorted scan of up to 8 short levels is as fast as hashing the level
// (BenchmarkKids in kids_test.go).
const listMax = 8

// listMin is the child count at which a map goes back to a slice: half of
// listMax, so a node that hovers around listMax does not convert on every
// change, and a node whose children have left gives back its map (a Go map
// does not shrink). A map that loses most of its children but keeps more
// than listMin keeps its size: tracking its peak would cost every node 8
// bytes and, for Retained, move it up a size class.
const listMin = listMax / 2

// kid is one literal child: its level and its node.
type kid[N any] struct {
	level string
	n     *N
}

// kids holds a node's literal children: up to listMax in an unsorted slice,
// more in a map. At most one of list and big is non-nil; both are nil when
// there are no children.
//
// Levels are stored as private copies (see own), never as views of the
// caller's string: a topic from a decoded packet shares its memory with the
// packet's payload, and a node outlives the message or subscription that
// created it.
type kids[N any] struct {
	list []kid[N]
	big  map[string]*N
}

// get returns the child for level, or nil.
func (k *kids[N]) get(level string) *N {
	if k.big != nil {
		return k.big[level]
	}
	for i := range k.list {
		if e := &k.list[i]; same(e.level, level) {
			return e.n
		}
	}
	return nil
}

// same is a == b, but rejects most different levels of equal length (device
// numbers, say) by their last byte before calling the runtime's memequal.
func same(a, b string) bool {
	return len(a) == len(b) && (len(a) == 0 || a[len(a)-1] == b[len(b)-1]) && a == b
}

// len returns the number of children.
func (k *kids[N]) len() int {
	if k.big != nil {
		return len(k.big)
	}
	return len(k.list)
}

// empty reports whether k holds no children and no memory for them.
func (k *kids[N]) empty() bool {
	return k.list == nil && k.big == nil
}

// add stores c under level, which must not be present, and copies level.
func (k *kids[N]) add(level string, c *N) {
	level = own(level)
	switch {
	case k.big != nil:
		k.big[level] = c
	case len(k.list) < listMax:
		k.list = append(k.list, kid[N]{level, c})
	default:
		k.big = make(map[string]*N, listMax+1)
		for _, e := range k.list {
			k.big[e.level] = e.n
		}
		k.big[level] = c
		k.list = nil
	}
}

// remove deletes the child for level, if present.
func (k *kids[N]) remove(level string) {
	if k.big != nil {
		delete(k.big, level)
		if len(k.big) <= listMin {
			k.shrink()
		}
		return
	}
	for i := range k.list {
		if k.list[i].level != level {
			continue
		}
		last := len(k.list) - 1
		k.list[i] = k.list[last]
		k.list[last] = kid[N]{} // drop references for the GC
		k.list = k.list[:last]
		switch {
		case last == 0:
			k.list = nil
		case last <= cap(k.list)/4:
			k.list = append([]kid[N](nil), k.list...)
		}
		return
	}
}

// shrink moves the children of a small map back into a slice.
func (k *kids[N]) shrink() {
	var list []kid[N]
	if len(k.big) > 0 {
		list = make([]kid[N], 0, len(k.big))
		for level, c := range k.big {
			list = append(list, kid[N]{level, c})
		}
	}
	k.list, k.big = list, nil
}

// own returns a copy of a level that shares no memory with the caller's
// string. Levels of up to 15 bytes, the usual case, come from Go's tiny
// allocator and cost their length rounded up to an alignment.
func own(level string) string {
	return strings.Clone(level)
}
