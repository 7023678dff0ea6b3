package interop

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// message is one application message as a peer received it.
type message struct {
	Topic   string
	Payload string
	QoS     byte
	Retain  bool
	Dup     bool
	SubIDs  []int   // MQTT 5 subscription identifiers, sorted
	Expiry  *uint32 // MQTT 5 message expiry interval, if present
	At      time.Time
}

func (m message) String() string {
	s := fmt.Sprintf("%s %q q%d", m.Topic, m.Payload, m.QoS)
	if m.Retain {
		s += " retain"
	}
	if m.Dup {
		s += " dup"
	}
	if len(m.SubIDs) > 0 {
		s += fmt.Sprintf(" subids=%v", m.SubIDs)
	}
	if m.Expiry != nil {
		s += fmt.Sprintf(" expiry=%d", *m.Expiry)
	}
	return s
}

// queue is an unbounded, claimable list of things a peer reported. Waiters
// claim the first unclaimed item that matches, so tests can wait for one
// kind of event without losing the others.
type queue[T any] struct {
	mu      sync.Mutex
	items   []T
	claimed []bool
	changed chan struct{} // closed and replaced on every put
}

func newQueue[T any]() *queue[T] {
	return &queue[T]{changed: make(chan struct{})}
}

func (q *queue[T]) put(v T) {
	q.mu.Lock()
	q.items = append(q.items, v)
	q.claimed = append(q.claimed, false)
	close(q.changed)
	q.changed = make(chan struct{})
	q.mu.Unlock()
}

// claim waits up to d for an unclaimed item matching match.
func (q *queue[T]) claim(d time.Duration, match func(T) bool) (T, bool) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		q.mu.Lock()
		for i, v := range q.items {
			if !q.claimed[i] && (match == nil || match(v)) {
				q.claimed[i] = true
				q.mu.Unlock()
				return v, true
			}
		}
		changed := q.changed
		q.mu.Unlock()
		select {
		case <-changed:
		case <-timer.C:
			var zero T
			return zero, false
		}
	}
}

// all returns every item received so far, claimed or not.
func (q *queue[T]) all() []T {
	q.mu.Lock()
	defer q.mu.Unlock()
	return slices.Clone(q.items)
}

// unclaimed returns the items nobody claimed yet.
func (q *queue[T]) unclaimed() []T {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []T
	for i, v := range q.items {
		if !q.claimed[i] {
			out = append(out, v)
		}
	}
	return out
}

// inbox is the messages one subscriber received.
type inbox struct {
	name string
	q    *queue[message]
}

func newInbox(name string) *inbox { return &inbox{name: name, q: newQueue[message]()} }

func (in *inbox) put(m message) {
	if m.At.IsZero() {
		m.At = time.Now()
	}
	slices.Sort(m.SubIDs)
	in.q.put(m)
}

// next returns the next message or fails the test after d.
func (in *inbox) next(t *testing.T, d time.Duration) message {
	t.Helper()
	m, ok := in.q.claim(d, nil)
	if !ok {
		t.Fatalf("%s: no message within %v (received so far: %v)", in.name, d, in.q.all())
	}
	return m
}

// collect returns the next n messages or fails the test after d.
func (in *inbox) collect(t *testing.T, n int, d time.Duration) []message {
	t.Helper()
	deadline := time.Now().Add(d)
	out := make([]message, 0, n)
	for len(out) < n {
		m, ok := in.q.claim(time.Until(deadline), nil)
		if !ok {
			t.Fatalf("%s: got %d of %d messages within %v: %v", in.name, len(out), n, d, out)
		}
		out = append(out, m)
	}
	return out
}

// none fails the test if a message arrives within d.
func (in *inbox) none(t *testing.T, d time.Duration) {
	t.Helper()
	if m, ok := in.q.claim(d, nil); ok {
		t.Errorf("%s: unexpected message %v", in.name, m)
	}
}

// settled waits for n messages within d, then keeps collecting until none
// arrives for settle, and returns them all (possibly more than n). Fewer
// than n is returned as is; callers compare.
func (in *inbox) settled(n int, d, settle time.Duration) []message {
	var got []message
	deadline := time.Now().Add(d)
	for len(got) < n {
		m, ok := in.q.claim(time.Until(deadline), nil)
		if !ok {
			break
		}
		got = append(got, m)
	}
	for {
		m, ok := in.q.claim(settle, nil)
		if !ok {
			return got
		}
		got = append(got, m)
	}
}

// expectTopics waits until the messages on exactly the topics want (a
// multiset) have arrived, then waits settle for strays, and fails the test on
// any difference.
func (in *inbox) expectTopics(t *testing.T, want []string, d, settle time.Duration) []message {
	t.Helper()
	got := in.settled(len(want), d, settle)
	gotTopics := make([]string, len(got))
	for i, m := range got {
		gotTopics[i] = m.Topic
	}
	w := slices.Clone(want)
	sort.Strings(w)
	sort.Strings(gotTopics)
	if !slices.Equal(w, gotTopics) {
		t.Errorf("%s: got topics [%s], want [%s]", in.name, strings.Join(gotTopics, " "), strings.Join(w, " "))
	}
	return got
}
